"""What is in a store: counts by registry and source, and merged duplicates."""

from __future__ import annotations

from typing import Any

from celltrials.store import Store


def store_stats(store: Store) -> dict[str, Any]:
    """Records (current versions and all versions) vs trials, by registry and source."""
    con = store.con

    def rows(sql: str) -> list[dict[str, Any]]:
        cur = con.execute(sql)
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    one = con.execute("""
        SELECT (SELECT count(*) FROM records WHERE is_current),
               (SELECT count(*) FROM records),
               (SELECT count(*) FROM trials),
               (SELECT count(*) FROM trials WHERE n_records > 1),
               (SELECT coalesce(sum(n_records - 1), 0) FROM trials WHERE n_records > 1),
               (SELECT count(*) FROM ingests)
    """).fetchone()
    assert one is not None
    return {
        "db": store.path,
        "records": int(one[0]),
        "record_versions": int(one[1]),
        "trials": int(one[2]),
        "merged_trials": int(one[3]),
        "records_merged_away": int(one[4]),
        "ingests": int(one[5]),
        "by_registry": rows("""
            SELECT r.registry, count(*) AS records,
                   count(*) FILTER (WHERE tr.is_primary) AS trials
            FROM records r JOIN trial_records tr USING (record_key)
            GROUP BY 1 ORDER BY records DESC, registry"""),
        "by_source": rows("""
            SELECT r.source, r.source_format AS format, count(*) AS records,
                   count(*) FILTER (WHERE r.is_current) AS current_records
            FROM records r GROUP BY 1, 2 ORDER BY 1"""),
    }


def duplicate_groups(store: Store, limit: int | None = None) -> list[dict[str, Any]]:
    """Each merged trial with its records and the shared ids that linked them."""
    df = store.query(f"""
        SELECT tr.trial_id, tr.merge_reason, tr.n_records,
               list(struct_pack(record_id := r.record_id, channel := r.channel, registry := r.registry,
                                format := r.source_format, is_primary := tr.is_primary,
                                last_update := CAST(r.last_update AS VARCHAR))
                    ORDER BY tr.is_primary DESC, r.channel, r.record_id) AS records
        FROM trial_records tr JOIN records r USING (record_key)
        WHERE tr.n_records > 1
        GROUP BY 1, 2, 3 ORDER BY tr.n_records DESC, tr.trial_id
        {f"LIMIT {int(limit)}" if limit else ""}""")
    return [
        {
            "trial_id": r["trial_id"],
            "reason": r["merge_reason"],
            "n_records": int(r["n_records"]),
            "records": [dict(x) for x in r["records"]],
        }
        for r in df.to_dict("records")
    ]
