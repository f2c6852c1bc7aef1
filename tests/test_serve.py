"""`celltrials serve` through its ASGI app (httpx over ASGITransport) on
the real registry data of ../shared/data, classified and linked to products.

Numbers are checked against the landscape report built with the same filters
(its ``data-count-id`` values), against the report's own selection, and
against counts the tests compute from the store with their own SQL.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pandas as pd
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

import celltrials
from celltrials.analysis import landscape as L
from celltrials.changes import changes
from celltrials.cli import cli
from celltrials.errors import ConfigError
from celltrials.ingest import ingest_paths
from celltrials.labelling import classify_store
from celltrials.products import link_products
from celltrials.report.build import build_report
from celltrials.serve.app import ServeConfig, create_app
from tests.conftest import DATA
from tests.conftest_report import classified_store_path, number, parse_page
from tests.serve_client import Client

HOSTS = ("127.0.0.1", "localhost")
CAR_JSON = DATA / "ctgov-v2-json" / "reconstructed" / "car_cell_therapy_2026-08-22.json"


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory, full_store_path: Path) -> Path:
    """The classified real-data store with product links (a private copy)."""
    src = classified_store_path(tmp_path_factory, full_store_path)
    path = tmp_path_factory.mktemp("serve") / "serve.duckdb"
    shutil.copy(src, path)
    return path


@pytest.fixture(scope="module")
def client(store_path: Path) -> Iterator[Client]:
    app = create_app(ServeConfig(str(store_path), allowed_hosts=HOSTS))
    with Client(app, base_url="http://127.0.0.1") as c:
        yield c


def sql(path: Path, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with celltrials.open(path, read_only=True) as s:
        return s.con.execute(query, params or []).fetchall()


# ------------------------------------------------------------------ routes
@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/trials",
        "/trials?cell_type=car_t&country=China&start_year=2020-2024",
        "/trials/NCT04315987",
        "/products",
        "/products/Kymriah",
        "/changes?since=2020-01-01",
    ],
)
def test_every_page_renders(client: Client, url: str) -> None:
    r = client.get(url)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"].startswith("text/html")
    assert "<main" in r.text and "Traceback" not in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]


@pytest.mark.parametrize(
    "url,key",
    [
        ("/api/", "headline"),
        ("/api/trials", "trials"),
        ("/api/trials/NCT04315987", "trial"),
        ("/api/products", "products"),
        ("/api/products/Kymriah", "approvals"),
        ("/api/changes?since=2020-01-01", "changes"),
        ("/api/status", "snapshot"),
    ],
)
def test_every_api_route_returns_json(client: Client, url: str, key: str) -> None:
    r = client.get(url)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert key in r.json()


def test_api_trials_lists_primary_ids_and_count(client: Client, store_path: Path) -> None:
    data = client.get("/api/trials", params={"cell_type": "car_t", "per_page": 200}).json()
    expected = sql(
        store_path,
        """
        SELECT t.trial_id FROM trials t JOIN labels l USING (trial_id)
        WHERE l.is_cell_therapy AND list_contains(l.cell_type, 'car_t') ORDER BY 1""",
    )
    assert data["count"] == len(expected) > 1000
    assert [t["trial_id"] for t in data["trials"]] == [e[0] for e in expected[:200]]
    primary = dict(sql(store_path, "SELECT trial_id, primary_record_id FROM trials"))
    assert all(t["primary_record_id"] == primary[t["trial_id"]] for t in data["trials"])


# ------------------------------------------------- same numbers everywhere
COMBOS: list[dict[str, Any]] = [
    {},
    {"country": ["China"], "start_year": "2019-2024"},
    {"cell_type": ["immune"], "phase": ["1", "1/2"], "registry": ["ctgov"]},
    {
        "indication_group": ["oncology"],
        "status": ["recruiting", "not_yet_recruiting"],
        "title": "CD19",
    },
    {"cell_type": ["msc"], "all_trials": True},
]


def _report_counts(store_path: Path, out: Path, combo: dict[str, Any]) -> dict[str, int]:
    f = L.make_filters(
        country=combo.get("country", ()),
        registry=combo.get("registry", ()),
        start_year=combo.get("start_year"),
        status=combo.get("status", ()),
        phase=combo.get("phase", ()),
        cell_type=combo.get("cell_type", ()),
        indication_group=combo.get("indication_group", ()),
        title=combo.get("title"),
        scope="all" if combo.get("all_trials") else "cell_therapy",
    )
    with celltrials.open(store_path, read_only=True) as s:
        res = build_report(s, out, f, figures=False, jobs=0)
    page, _ = parse_page(res.html)
    return {
        cid: number(text)
        for cid, text in page.counts
        if text.replace(",", "").lstrip("-").isdigit()
    }


def _params(combo: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for k, v in combo.items():
        if k == "all_trials":
            out.append((k, "1"))
        elif isinstance(v, list):
            out += [(k, x) for x in v]
        else:
            out.append((k, str(v)))
    return out


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: urlencode(_params(c)) or "default")
def test_dashboard_counts_equal_the_reports(
    client: Client, store_path: Path, tmp_path: Path, combo: dict[str, Any]
) -> None:
    report = _report_counts(store_path, tmp_path, combo)
    qs = urlencode(_params(combo))
    listed = client.get(f"/api/trials?{qs}").json()
    assert listed["count"] == report["headline:trials"]
    ov = client.get(f"/api/?{qs}").json()
    for metric, value in ov["headline"].items():
        if f"headline:{metric}" in report:
            assert value == report[f"headline:{metric}"], metric
    compared = 0
    for chart in ov["charts"]:
        mine = {
            f"{chart['id']}:{it['key']}" + (f"|{it['series']}" if chart["stacked"] else ""): it["n"]
            for it in chart["items"]
        }
        theirs = {cid: n for cid, n in report.items() if cid.startswith(chart["id"] + ":")}
        if chart["id"] == "countries":  # the dashboard shows the top 15
            assert mine.items() <= theirs.items() and len(mine) == min(15, len(theirs))
        else:
            assert mine == theirs, chart["id"]
        compared += len(mine)
    assert compared >= (20 if report["headline:trials"] > 100 else 1)


def test_clicking_a_count_lists_exactly_its_trials(client: Client) -> None:
    """Every linked count of the overview opens a list of the same size."""
    checked = 0
    for base in (
        [("country", "China")],
        [("cell_type", "immune"), ("phase", "2")],
        [("cell_type", "car_t"), ("cell_type", "msc"), ("status", "recruiting")],
    ):
        ov = client.get("/api/?" + urlencode(base)).json()
        for chart in ov["charts"]:
            for it in chart["items"][:5]:
                if not it["link"]:
                    continue
                params = [tuple(x) for x in it["link"]]
                got = client.get("/api/trials?" + urlencode(params)).json()["count"]
                assert got == it["n"], (base, chart["id"], it)
                checked += 1
    assert checked >= 40


def test_facet_counts_predict_the_list(client: Client) -> None:
    base = [("cell_type", "msc"), ("country", "China")]
    data = client.get("/api/trials?" + urlencode(base) + "&facets=1").json()
    for facet in ("msc_source", "phase", "status", "therapeutic_area", "sponsor_class", "origin"):
        for v in data["facets"][facet][:3]:
            got = client.get("/api/trials?" + urlencode([*base, (facet, v["value"])])).json()[
                "count"
            ]
            assert got == v["n"], (facet, v)
    # a facet's own filter is left out of its counts: choosing a second value adds its trials
    ct = {v["value"]: v["n"] for v in data["facets"]["cell_type"]}
    both = client.get(
        "/api/trials?"
        + urlencode([("cell_type", "msc"), ("cell_type", "car_t"), ("country", "China")])
    ).json()["count"]
    assert ct["msc"] + ct["car_t"] >= both >= max(ct["msc"], ct["car_t"])


def test_search_matches_an_independent_scan(client: Client, store_path: Path) -> None:
    expected = {
        r[0]
        for r in sql(
            store_path,
            """
        SELECT t.trial_id FROM trials t JOIN labels l USING (trial_id)
        WHERE l.is_cell_therapy AND (
            contains(lower(coalesce(t.title, '') || ' ' || coalesce(t.official_title, '') || ' '
                           || coalesce(t.brief_summary, '')), 'wharton')
            OR t.trial_id IN (SELECT trial_id FROM interventions
                              WHERE contains(lower(coalesce(name, '') || ' ' || coalesce(description, '') || ' '
                                                   || array_to_string(other_names, ' ')), 'wharton'))
            OR t.trial_id IN (SELECT trial_id FROM conditions WHERE contains(lower(condition), 'wharton')))""",
        )
    }
    got = client.get("/api/trials", params={"q": "Wharton", "per_page": 200}).json()
    assert got["count"] == len(expected) > 5
    assert {t["trial_id"] for t in got["trials"]} == expected


def test_filters_round_trip_through_the_url(client: Client) -> None:
    url = (
        "/trials?cell_type=car_t&country=China&start_year=2020-2024&phase=PHASE1&target=CD19"
        "&q=lymphoma&sort=-start_date"
    )
    html = client.get(url).text
    for name, value in [
        ("cell_type", "car_t"),
        ("country", "China"),
        ("phase", "PHASE1"),
        ("target", "CD19"),
    ]:
        assert f'name="{name}" value="{value}" checked' in html, name
    assert 'value="2020-2024"' in html and 'value="lymphoma"' in html
    assert '<option value="-start_date" selected>' in html


# ------------------------------------------------------------------ trial
def test_trial_page_by_any_id_in_any_case(client: Client, store_path: Path) -> None:
    tid, other = sql(
        store_path,
        """
        SELECT trial_id, id_raw FROM trial_ids WHERE upper(id_raw) <> upper(trial_id)
        AND trial_id IN (SELECT trial_id FROM trials WHERE n_records > 1) ORDER BY 1, 2 LIMIT 1""",
    )[0]
    for any_id in (tid, tid.lower(), other):
        d = client.get(f"/api/trials/{any_id}").json()
        assert d["trial_id"] == tid
    page = client.get(f"/trials/{other}").text
    assert tid in page and "Ids and merged records" in page


def test_trial_page_shows_labels_evidence_and_history(client: Client, store_path: Path) -> None:
    d = client.get("/api/trials/NCT04315987").json()
    ev = sql(
        store_path, "SELECT field, value, text FROM label_evidence WHERE trial_id = 'NCT04315987'"
    )
    assert {(e["field"], e["value"], e["text"]) for e in d["evidence"]} == set(ev)
    html = client.get("/trials/NCT04315987").text
    assert html.count('<mark class="evidence-hit">') == len(ev) > 0
    # a trial with several stored versions shows what changed between them
    tid, n = sql(
        store_path,
        """
        SELECT tr.trial_id, count(DISTINCT r.last_update) n FROM trial_records tr
        JOIN records r2 USING (record_key) JOIN records r ON r.channel = r2.channel AND r.record_id = r2.record_id
        WHERE tr.is_primary GROUP BY 1 HAVING n > 1 ORDER BY 2 DESC, 1 LIMIT 1""",
    )[0]
    h = client.get(f"/api/trials/{tid}").json()["history"]
    assert sum(len(rec["versions"]) for rec in h) >= n
    assert any(v["changed"] for rec in h for v in rec["versions"])


def test_trial_with_posted_results_shows_them(client: Client, store_path: Path) -> None:
    rows = sql(
        store_path,
        """SELECT t.trial_id, json_array_length(raw_json(r.raw),
                                         '$.resultsSection.outcomeMeasuresModule.outcomeMeasures')
                              FROM trials t JOIN records r ON r.record_key = t.primary_record_key
                              WHERE json_exists(raw_json(r.raw), '$.resultsSection.outcomeMeasuresModule') ORDER BY 1 LIMIT 1""",
    )
    assert rows, "the shared data has API v2 records with posted results"
    d = client.get(f"/api/trials/{rows[0][0]}").json()
    assert len({o["outcome_index"] for o in d["results"]["outcomes"]}) == rows[0][1]
    assert "Posted results" in client.get(f"/trials/{rows[0][0]}").text


def test_unknown_trial_is_404_without_traceback(client: Client) -> None:
    r = client.get("/trials/NCT00000000XYZ")
    assert r.status_code == 404 and "No trial with id" in r.text and "Traceback" not in r.text
    assert client.get("/api/trials/nope").json()["status"] == 404


# ---------------------------------------------------------------- products
def test_product_page_lists_its_linked_trials(client: Client, store_path: Path) -> None:
    d = client.get("/api/products/tisagenlecleucel").json()  # an INN resolves to the product
    assert d["product"] == "Kymriah"
    expected = {
        r[0]
        for r in sql(
            store_path, "SELECT DISTINCT trial_id FROM product_links WHERE product = 'Kymriah'"
        )
    }
    assert {t["trial_id"] for t in d["trials"]} == expected
    assert sum(d["by_phase"].values()) == len(expected)
    assert any(a["source_url"] for a in d["approvals"]) and d["funnel"]
    listed = client.get("/api/trials", params={"product": "Kymriah", "all_trials": 1}).json()
    assert listed["count"] == len(expected)


# ----------------------------------------------------------------- changes
def test_changes_page_and_cli_agree_with_the_library(client: Client, store_path: Path) -> None:
    with celltrials.open(store_path, read_only=True) as s:
        lib = changes(s, "2020-01-01")
    r = CliRunner().invoke(
        cli, ["--db", str(store_path), "changes", "--since", "2020-01-01", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == lib
    api = client.get(
        "/api/changes", params={"since": "2020-01-01", "all_trials": 1, "limit": 5000}
    ).json()
    assert api["counts"] == lib["counts"] and api["total"] == lib["total"]


def test_changes_match_an_independent_walk_over_versions(store_path: Path) -> None:
    """Status changes recomputed in Python from the raw version rows."""
    rows = sql(
        store_path,
        """SELECT channel, record_id, last_update, ingested_at, record_key, status FROM records
                              WHERE last_update IS NOT NULL ORDER BY channel, record_id, last_update, ingested_at,
                              record_key""",
    )
    last: dict[tuple[str, str], dict[Any, Any]] = {}
    for ch, rid, upd, _ing, _key, status in rows:
        last.setdefault((ch, rid), {})[upd] = status  # the last version of each update date
    expected = set()
    for (_ch, rid), by_date in last.items():
        dates = sorted(by_date)
        for a, b in itertools.pairwise(dates):
            if by_date[a] != by_date[b] and str(b) >= "2020-01-01":
                expected.add((rid, b.isoformat(), by_date[a], by_date[b]))
    with celltrials.open(store_path, read_only=True) as s:
        got = {
            (c["record_id"], c["date"], c["old"], c["new"])
            for c in changes(s, "2020-01-01")["changes"]
            if c["kind"] == "status"
        }
    assert got == expected and len(expected) > 10


# ------------------------------------------------------------------ export
def test_export_is_the_whole_selection(client: Client) -> None:
    params = {"cell_type": "msc", "country": "China"}
    n = client.get("/api/trials", params=params).json()["count"]
    r = client.get("/export", params={**params, "format": "csv"})
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == n > 50
    assert all("msc" in row["cell_type"].split("; ") for row in rows)
    wb = load_workbook(
        io.BytesIO(client.get("/export", params={**params, "format": "xlsx"}).content)
    )
    assert wb["trials"].max_row == n + 1
    pq = pd.read_parquet(
        io.BytesIO(client.get("/export", params={**params, "format": "parquet"}).content)
    )
    assert len(pq) == n and set(pq["trial_id"]) == {row["trial_id"] for row in rows}


# ------------------------------------------------------------------ safety
INJECTIONS = [
    "' OR '1'='1",
    "'; DROP TABLE records; --",
    '") OR 1=1 --',
    "%' OR 1=1 --",
    "\\'; SELECT 1; --",
    "x' UNION SELECT * FROM records --",
    "\x00",
    "{{7*7}}",
    "<script>alert(1)</script>",
]
PARAMS = [
    "country",
    "registry",
    "status",
    "target",
    "study_type",
    "product",
    "q",
    "title",
    "start_year",
    "phase",
    "cell_type",
    "indication_group",
    "msc_source",
    "origin",
    "sort",
    "page",
    "per_page",
]


@pytest.mark.parametrize("param", PARAMS)
def test_injection_strings_are_values_not_sql(client: Client, store_path: Path, param: str) -> None:
    before = sql(store_path, "SELECT count(*) FROM records")[0][0]
    for evil in INJECTIONS:
        for url in ("/api/trials", "/trials", "/api/", "/api/changes"):
            r = client.get(url, params={param: evil})
            assert r.status_code in (200, 400), (param, evil, r.status_code, r.text[:300])
            assert "Traceback" not in r.text
            if r.status_code == 200 and url == "/api/trials":
                assert r.json()["count"] == 0, (param, evil)
            if r.status_code == 200 and url == "/trials":
                assert "<script>alert(1)</script>" not in r.text
    assert sql(store_path, "SELECT count(*) FROM records")[0][0] == before


def test_page_size_is_capped(client: Client) -> None:
    d = client.get("/api/trials", params={"per_page": 100000, "all_trials": 1}).json()
    assert d["per_page"] == 200 and len(d["trials"]) == 200 and d["count"] > 8000
    assert client.get("/api/trials", params={"page": 10**7}).status_code == 400
    last = client.get("/api/trials", params={"page": 99999}).json()  # past the end: the last page
    assert last["page"] == last["pages"]


def test_bad_input_is_a_plain_400(client: Client) -> None:
    r = client.get("/trials", params={"phase": "phase 9"})
    assert r.status_code == 400 and "unknown phase" in r.text and "Traceback" not in r.text
    j = client.get("/api/trials", params={"start_year": "2024-2019"}).json()
    assert j["status"] == 400 and "backwards" in j["error"] and j["hint"]
    assert client.get("/export", params={"format": "exe"}).status_code == 400


def test_foreign_host_header_is_refused(client: Client) -> None:
    assert client.get("/", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/", headers={"host": "localhost:8000"}).status_code == 200


def test_token_is_required_when_set(store_path: Path) -> None:
    app = create_app(ServeConfig(str(store_path), token="s3cret-token", allowed_hosts=("*",)))
    with Client(app, base_url="http://192.0.2.1") as c:
        assert c.get("/api/trials").status_code == 401
        assert c.get("/api/trials", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert (
            c.get("/api/trials", headers={"authorization": "Bearer s3cret-token"}).status_code
            == 200
        )
        r = c.get("/trials?token=s3cret-token&country=China", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/trials?country=China"
        assert "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/trials?country=China").status_code == 200  # the cookie now carries it


def test_remote_host_needs_an_explicit_flag(store_path: Path) -> None:
    r = CliRunner().invoke(cli, ["--db", str(store_path), "serve", "--host", "0.0.0.0"])
    assert r.exit_code != 0 and isinstance(r.exception, ConfigError)
    assert "beyond this machine" in r.exception.message and "--allow-remote" in r.exception.hint


def test_the_store_is_never_written_or_held(client: Client, store_path: Path) -> None:
    """The server reads a snapshot copy: the store file is unchanged, and a
    writer can open it while the server runs."""
    stat = store_path.stat()
    client.get("/trials")
    with celltrials.open(store_path) as s:  # read-write: no lock held by the dashboard
        s.con.execute("SELECT count(*) FROM trials").fetchone()
    assert client.get("/api/status").json()["store"] == str(store_path.resolve())
    assert store_path.stat().st_size == stat.st_size


# ------------------------------------------------------ untrusted registry text
EVIL_TITLE = (
    '<script>alert("owned")</script> {{ 7*7 }} {% if 1 %}jinja{% endif %} CAR-T cells for lymphoma'
)
EVIL_INTERVENTION = "<img src=x onerror=alert(1)> anti-CD19 CAR-T cells"


@pytest.fixture(scope="module")
def evil_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    studies = json.loads(CAR_JSON.read_text(encoding="utf-8"))
    study = json.loads(json.dumps(studies[0]))
    ps = study["protocolSection"]
    ps["identificationModule"]["nctId"] = "NCT09999901"
    ps["identificationModule"]["briefTitle"] = EVIL_TITLE
    ps["armsInterventionsModule"]["interventions"] = [
        {"type": "BIOLOGICAL", "name": EVIL_INTERVENTION}
    ]
    ps["statusModule"]["studyFirstSubmitDate"] = "2014-03-02"  # listed as a new trial on /changes
    d = tmp_path_factory.mktemp("evil")
    (d / "evil.json").write_text(json.dumps([study, studies[1]]), encoding="utf-8")
    path = d / "evil.duckdb"
    with celltrials.open(path) as s:
        assert ingest_paths(s, [d / "evil.json"]).clean
        classify_store(s)
        link_products(s)
    app = create_app(ServeConfig(str(path), allowed_hosts=HOSTS))
    with Client(app, base_url="http://127.0.0.1") as c:
        yield c


@pytest.mark.parametrize(
    "url", ["/trials", "/trials/NCT09999901", "/changes?since=1990-01-01", "/trials?q=owned"]
)
def test_registry_text_renders_as_text(evil_client: Client, url: str) -> None:
    html = evil_client.get(url).text
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;" in html
    assert "{{ 7*7 }}" in html and "{% if 1 %}jinja{% endif %}" in html and ">49<" not in html
    if url == "/trials/NCT09999901":
        assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_registry_text_in_json_is_verbatim(evil_client: Client) -> None:
    assert evil_client.get("/api/trials/NCT09999901").json()["trial"]["title"] == EVIL_TITLE
    html = evil_client.get("/").text  # chart data embedded as JSON cannot close its script element
    assert "</script> {{" not in html


def test_spreadsheet_export_defuses_formulas(evil_client: Client, tmp_path: Path) -> None:
    studies = json.loads(CAR_JSON.read_text(encoding="utf-8"))
    study = json.loads(json.dumps(studies[2]))
    study["protocolSection"]["identificationModule"]["nctId"] = "NCT09999902"
    study["protocolSection"]["identificationModule"]["briefTitle"] = (
        '=HYPERLINK("http://x.example","CAR-T")'
    )
    (tmp_path / "f.json").write_text(json.dumps([study]), encoding="utf-8")
    path = tmp_path / "f.duckdb"
    with celltrials.open(path) as s:
        ingest_paths(s, [tmp_path / "f.json"])
        classify_store(s)
    with Client(
        create_app(ServeConfig(str(path), allowed_hosts=HOSTS)), base_url="http://127.0.0.1"
    ) as c:
        rows = list(csv.DictReader(io.StringIO(c.get("/export?format=csv&all_trials=1").text)))
        assert rows[0]["title"] == "'" + '=HYPERLINK("http://x.example","CAR-T")'
        wb = load_workbook(io.BytesIO(c.get("/export?format=xlsx&all_trials=1").content))
        assert wb["trials"]["D2"].value.startswith("'=")
