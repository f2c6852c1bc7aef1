"""Live sync against a REAL local HTTP server (tests/ctgov_server.py) serving
real ClinicalTrials.gov study objects from ../shared/data; no test touches
the internet. Every end-to-end test asserts that the current records in the
store are exactly the served set."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import celltrials
from celltrials.cli import cli
from celltrials.errors import ConfigError, FetchError, PageError
from celltrials.progress import ProgressEvent
from celltrials.store import Store
from celltrials.sync import (
    DEFAULT_BASE_URL,
    MAX_URL_BYTES,
    CtgovClient,
    Query,
    fetch,
    fetch_ids,
    fetch_preset,
    get_preset,
    parse_retry_after,
    request_url,
    sync_status,
    update,
)
from tests.ctgov_server import (
    CAR_FILES,
    GENERAL_FILE,
    CtgovServer,
    load_studies,
    nct_id,
    real_studies,
)

pytestmark = pytest.mark.skipif(not GENERAL_FILE.exists(), reason="shared data not available")

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def all_studies() -> list[dict[str, Any]]:
    return real_studies()  # 2,587 reconstructed CAR studies + 50 general


@pytest.fixture(scope="module")
def small_studies() -> list[dict[str, Any]]:
    # 450 real studies: 400 CAR + the 50 general ones
    return load_studies(CAR_FILES[0])[:400] + load_studies(GENERAL_FILE)


@pytest.fixture
def server(small_studies: list[dict[str, Any]]) -> Any:
    with CtgovServer(small_studies) as srv:
        yield srv


@pytest.fixture
def store(tmp_path: Path) -> Any:
    st = celltrials.open(str(tmp_path / "sync.duckdb"))
    yield st
    st.close()


class Sleeps(list[float]):
    """Records sleeps instead of sleeping (no test waits on backoff)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(url: str, sleeps: Sleeps | None = None, **kw: Any) -> CtgovClient:
    opts: dict[str, Any] = {
        "rate": 0,
        "timeout": 5.0,
        "max_retries": 3,
        "backoff": 0.01,
        "sleep": sleeps if sleeps is not None else Sleeps(),
    }
    opts.update(kw)
    return CtgovClient(url, **opts)


QUERY = Query.build(term="chimeric antigen receptor")


def current_ids(store: Store) -> list[str]:
    return [
        r[0] for r in store.con.execute("SELECT record_id FROM records WHERE is_current").fetchall()
    ]


def assert_exact(store: Store, served: set[str]) -> None:
    ids = current_ids(store)
    assert len(ids) == len(set(ids)), "duplicate current records"
    assert set(ids) == served


# ------------------------------------------------------------ happy path
def test_full_sync_pages_through_real_studies(
    store: Store, all_studies: list[dict[str, Any]]
) -> None:
    events: list[ProgressEvent] = []
    with CtgovServer(all_studies) as srv, make_client(srv.base_url) as client:
        result = fetch(store, QUERY, client=client, progress=events.append)
        reqs = srv.page_requests()
        served = srv.served_ids()
    assert len(served) == 2637
    assert_exact(store, served)
    run = result.runs[0]
    assert (run.status, run.pages, run.studies_seen, run.total_count) == ("complete", 3, 2637, 2637)
    # the API contract: format=json, pageSize=1000, countTotal=true, pageToken on later pages
    assert [r.params.get("pageSize") for r in reqs] == ["1000"] * 3
    assert all(r.params["format"] == "json" and r.params["countTotal"] == "true" for r in reqs)
    assert all(r.params["query.term"] == "chimeric antigen receptor" for r in reqs)
    assert "pageToken" not in reqs[0].params and all("pageToken" in r.params for r in reqs[1:])
    # one ingest row per page; progress saw the total
    assert store.con.execute(
        "SELECT count(*) FROM ingests WHERE format = 'ctgov_api'"
    ).fetchone() == (3,)
    pages = [e for e in events if e.kind == "page"]
    assert [e.done for e in pages] == [1000, 2000, 2637] and pages[0].total == 2637
    assert [e.index for e in pages] == [1, 2, 3] and {e.stage for e in events} == {"sync"}
    status = sync_status(store)
    assert len(status) == 1 and status[0]["last_complete_sync"] is not None
    assert (
        status[0]["last_run"]["pages_done"] == 3 and status[0]["last_run"]["studies_seen"] == 2637
    )
    # trials were merged (views work)
    assert store.con.execute("SELECT count(*) FROM trials").fetchone() == (2637,)


def test_rerun_of_complete_query_adds_no_duplicates(server: CtgovServer, store: Store) -> None:
    with make_client(server.base_url) as client:
        fetch(store, QUERY, client=client, page_size=100)
        again = fetch(store, QUERY, client=client, page_size=100)
    assert again.runs[0].n_new == 0 and again.runs[0].resumed is False
    assert store.con.execute("SELECT count(*) FROM records").fetchone() == (450,)
    assert_exact(store, server.served_ids())


def test_query_options_map_to_api_params(server: CtgovServer, store: Store) -> None:
    q = Query.build(
        cond="  lymphoma ",
        intr="CAR-T",
        term="CD19",
        advanced="AREA[Phase]PHASE1",
        status=["recruiting", "COMPLETED,active not recruiting"],
    )
    assert q.as_params() == {
        "query.cond": "lymphoma",
        "query.intr": "CAR-T",
        "query.term": "CD19",
        "filter.advanced": "AREA[Phase]PHASE1",
        "filter.overallStatus": "ACTIVE_NOT_RECRUITING,COMPLETED,RECRUITING",
    }
    # identity: same normalised params + base URL, whatever the spelling
    same = Query.build(
        term="CD19",
        intr="CAR-T",
        cond="lymphoma",
        advanced="AREA[Phase]PHASE1",
        status="completed,recruiting,ACTIVE_NOT_RECRUITING",
    )
    assert q.query_id(DEFAULT_BASE_URL) == same.query_id(DEFAULT_BASE_URL + "/")
    assert q.query_id(DEFAULT_BASE_URL) != q.query_id("http://mirror.example/api/v2")
    with make_client(server.base_url) as client:
        fetch(store, q, client=client)
    sent = server.page_requests()[0].params
    assert {k: sent[k] for k in q.as_params()} == q.as_params()
    served = server.served_ids({"filter.overallStatus": sent["filter.overallStatus"]})
    assert_exact(store, served)


def test_empty_query_and_long_url_are_config_errors(store: Store) -> None:
    with pytest.raises(ConfigError, match="empty"):
        Query.build()
    huge = Query.build(term=" OR ".join(f'"phrase number {i}"' for i in range(600)))
    assert len(request_url(DEFAULT_BASE_URL, huge.as_params()).encode()) > MAX_URL_BYTES
    with make_client("http://127.0.0.1:9") as client, pytest.raises(ConfigError, match="URL"):
        fetch(store, huge, client=client)


# ------------------------------------------------------------------ faults
def test_429_with_retry_after_seconds_is_honoured(server: CtgovServer, store: Store) -> None:
    server.add_fault("status", status=429, headers={"Retry-After": "7"}, page=2)
    sleeps = Sleeps()
    with make_client(server.base_url, sleeps) as client:
        result = fetch(store, QUERY, client=client, page_size=100)
    assert sleeps == [7.0]
    assert result.runs[0].pages == 5
    assert_exact(store, server.served_ids())


def test_retry_after_http_date() -> None:
    now = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Tue, 24 Nov 2026 12:01:30 GMT", now=now) == 90.0
    assert parse_retry_after("Tue, 24 Nov 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("120", now=now) == 120.0
    assert parse_retry_after("soon", now=now) is None
    # end to end through the client (MockTransport): the wait is the date's distance
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": when}),
            httpx.Response(200, json={"studies": []}),
        ]
    )
    sleeps = Sleeps()
    client = CtgovClient(
        "http://x/api/v2",
        transport=httpx.MockTransport(lambda r: next(answers)),
        rate=0,
        sleep=sleeps,
    )
    assert client.studies_page({"query.term": "x"}) == {"studies": []}
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 30


def test_500_and_503_are_retried_with_jittered_backoff(server: CtgovServer, store: Store) -> None:
    server.add_fault("status", status=500, page=3)
    server.add_fault("status", status=503, page=3)
    server.add_fault("status", status=503, page=3)
    sleeps = Sleeps()
    with make_client(server.base_url, sleeps, backoff=0.5, max_backoff=60) as client:
        fetch(store, QUERY, client=client, page_size=100)
    assert len(sleeps) == 3
    for k, s in enumerate(sleeps):  # full jitter: uniform in [0, backoff * 2**k]
        assert 0 <= s <= 0.5 * 2**k
    assert_exact(store, server.served_ids())


def test_each_retry_is_reported_with_its_reason_and_wait(server: CtgovServer, store: Store) -> None:
    server.add_fault("status", status=503, headers={"Retry-After": "3"}, page=2)
    server.add_fault("status", status=500, page=2)
    events: list[ProgressEvent] = []
    sleeps = Sleeps()
    with make_client(server.base_url, sleeps, backoff=0.5, on_retry=events.append) as client:
        fetch(store, QUERY, client=client, page_size=100)
    assert [(e.kind, e.done, e.total) for e in events] == [("retry", 1, 4), ("retry", 2, 4)]
    assert events[0].message == "HTTP 503; retrying in 3.0 s"
    assert events[1].message == f"HTTP 500; retrying in {sleeps[1]:.1f} s"
    assert sleeps[0] == 3.0 and 0 <= sleeps[1] <= 0.5 * 2  # Retry-After, then full jitter (k = 1)
    assert all("pageToken" in e.item for e in events)  # the request that was retried
    assert_exact(store, server.served_ids())


def test_connection_closed_mid_body_is_retried(server: CtgovServer, store: Store) -> None:
    server.add_fault("close_mid_body", page=2)
    sleeps = Sleeps()
    with make_client(server.base_url, sleeps) as client:
        fetch(store, QUERY, client=client, page_size=100)
    assert len(sleeps) == 1
    assert len([r for r in server.page_requests() if r.page == 2]) == 2
    assert_exact(store, server.served_ids())


def test_response_slower_than_timeout_is_retried(server: CtgovServer, store: Store) -> None:
    server.add_fault("slow", delay=3.0, page=1)
    sleeps = Sleeps()
    with make_client(server.base_url, sleeps, timeout=0.5) as client:
        fetch(store, QUERY, client=client, page_size=200)
    assert len(sleeps) == 1
    assert_exact(store, server.served_ids())


def test_gives_up_after_max_retries_then_resumes(server: CtgovServer, store: Store) -> None:
    server.add_fault("status", status=503, page=3, times=50)
    with make_client(server.base_url, max_retries=2) as client, pytest.raises(FetchError) as info:
        fetch(store, QUERY, client=client, page_size=100)
    assert "HTTP 503" in info.value.message and "gave up after 3 attempts" in info.value.message
    assert "page 3" in info.value.message and "resume" in info.value.hint
    assert len(current_ids(store)) == 200  # pages 1-2 committed, nothing of page 3
    assert sync_status(store)[0]["last_run"]["status"] == "interrupted"
    server.faults.clear()
    n_before = len(server.page_requests())
    with make_client(server.base_url) as client:
        result = fetch(store, QUERY, client=client, page_size=100)
    run = result.runs[0]
    assert run.resumed and run.resumed_from_page == 3 and run.pages == 3 and run.pages_done == 5
    assert [r.page for r in server.page_requests()[n_before:]] == [3, 4, 5]
    assert_exact(store, server.served_ids())


@pytest.mark.parametrize("kind", ["bad_json", "no_studies"])
def test_malformed_page_is_a_page_error_naming_the_page(
    server: CtgovServer, store: Store, kind: str
) -> None:
    server.add_fault(kind, page=2)
    with make_client(server.base_url) as client, pytest.raises(PageError) as info:
        fetch(store, QUERY, client=client, page_size=100)
    assert "page 2" in info.value.message and "pageToken" in info.value.message
    assert ("not valid JSON" if kind == "bad_json" else "no 'studies' list") in info.value.message
    assert len(current_ids(store)) == 100
    with make_client(server.base_url) as client:
        fetch(store, QUERY, client=client, page_size=100)
    assert_exact(store, server.served_ids())


def test_bad_study_fails_the_whole_page(
    server: CtgovServer, store: Store, small_studies: list[dict[str, Any]]
) -> None:
    server.add_fault("bad_study", page=2)
    with make_client(server.base_url) as client, pytest.raises(PageError) as info:
        fetch(store, QUERY, client=client, page_size=100)
    msg = info.value.message
    assert "page 2" in msg and "study 2 of 100" in msg and "NOT-AN-ID" in msg
    # nothing of page 2 was stored, not even its 99 good studies
    assert set(current_ids(store)) == {nct_id(s) for s in small_studies[:100]}
    with make_client(server.base_url) as client:
        fetch(store, QUERY, client=client, page_size=100)
    assert_exact(store, server.served_ids())


def test_client_errors_are_not_retried() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, text="unknown parameter query.foo")

    client = CtgovClient(
        "http://x/api/v2", transport=httpx.MockTransport(handler), rate=0, sleep=Sleeps()
    )
    with pytest.raises(FetchError, match="HTTP 400: unknown parameter"):
        client.studies_page({"query.term": "x"})
    assert len(calls) == 1


def test_retry_after_beyond_limit_stops_at_once() -> None:
    client = CtgovClient(
        "http://x/api/v2",
        rate=0,
        sleep=Sleeps(),
        max_retry_after=60,
        transport=httpx.MockTransport(
            lambda r: httpx.Response(429, headers={"Retry-After": "3600"})
        ),
    )
    with pytest.raises(FetchError, match="wait 3600 s"):
        client.studies_page({"query.term": "x"})
    assert client.n_requests == 1


def test_rate_limit_spaces_requests() -> None:
    now = [100.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    client = CtgovClient(
        "http://x/api/v2",
        rate=30,
        clock=lambda: now[0],
        sleep=sleep,
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"studies": []})),
    )
    for _ in range(3):
        client.studies_page({"query.term": "x"})
    assert sleeps == [2.0, 2.0]  # 30 requests per minute = one every 2 s
    now[0] += 10  # idle time is not made up for
    client.studies_page({"query.term": "x"})
    assert sleeps == [2.0, 2.0]


# ------------------------------------------------------------------ resume
def test_ctrl_c_between_pages_resumes(server: CtgovServer, store: Store) -> None:
    def interrupt(ev: ProgressEvent) -> None:
        if ev.kind == "page" and ev.index == 2:
            raise KeyboardInterrupt

    with make_client(server.base_url) as client, pytest.raises(KeyboardInterrupt):
        fetch(store, QUERY, client=client, page_size=100, progress=interrupt)
    assert len(current_ids(store)) == 200
    with make_client(server.base_url) as client:  # a different page size: the run keeps its own
        result = fetch(store, QUERY, client=client, page_size=1000)
    run = result.runs[0]
    assert (run.resumed_from_page, run.page_size, run.pages, run.pages_done) == (3, 100, 3, 5)
    assert_exact(store, server.served_ids())


def test_refused_page_token_restarts_the_query(server: CtgovServer, store: Store) -> None:
    server.add_fault("status", status=503, page=2, times=50)
    with make_client(server.base_url, max_retries=0) as client, pytest.raises(FetchError):
        fetch(store, QUERY, client=client, page_size=100)
    server.faults.clear()
    store.con.execute("UPDATE sync_runs SET next_page_token = 'expired-token'")
    with make_client(server.base_url) as client:
        result = fetch(store, QUERY, client=client, page_size=100)
    assert result.runs[0].restarted and result.runs[0].pages_done == 5
    assert_exact(store, server.served_ids())


def _cli(db: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "celltrials", "--db", str(db), "--quiet", *args]


def test_kill_9_between_pages_then_rerun_completes(
    tmp_path: Path, all_studies: list[dict[str, Any]]
) -> None:
    """A subprocess is SIGKILLed while waiting for page 4 (pages 1-3 committed);
    the same command rerun resumes at page 4 and ends with exactly the served set."""
    db = tmp_path / "killed.duckdb"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("CELLTRIALS_CTGOV_URL", None)
    with CtgovServer(all_studies) as srv:
        reached, release = srv.block_page(4)
        cmd = _cli(
            db,
            "fetch",
            "--term",
            "chimeric antigen receptor",
            "--base-url",
            srv.base_url,
            "--rate",
            "0",
            "--page-size",
            "200",
        )
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert reached.wait(timeout=120), "client never asked for page 4"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            release.set()
        assert proc.returncode == -signal.SIGKILL
        with celltrials.open(str(db)) as st:
            assert sync_status(st)[0]["last_run"]["pages_done"] == 3
            assert len(current_ids(st)) == 600
        n_before = len(srv.page_requests())
        del srv._blocks[4]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        resumed_pages = [r.page for r in srv.page_requests()[n_before:]]
        served = srv.served_ids()
    assert resumed_pages == list(range(4, 15))  # no page fetched twice, none skipped
    with celltrials.open(str(db)) as st:
        assert_exact(st, served)
        assert st.con.execute("SELECT count(*) FROM records").fetchone() == (2637,)
        last = sync_status(st)[0]
        assert last["last_run"]["status"] == "complete" and last["last_run"]["pages_done"] == 14


# -------------------------------------------------------------- incremental
def test_update_fetches_changed_studies_and_keeps_history(
    store: Store, small_studies: list[dict[str, Any]]
) -> None:
    q = Query.build(term="CAR T", advanced="AREA[StudyType]INTERVENTIONAL")
    with CtgovServer(small_studies) as srv:
        with make_client(srv.base_url) as client:
            fetch(store, q, client=client, page_size=100)
        since = sync_status(store)[0]["last_complete_started"]
        today = datetime.now(UTC).date().isoformat()
        assert since is not None and since <= today
        changed = {}
        new_set = copy.deepcopy(small_studies)
        for s in new_set[10:15]:
            s["protocolSection"]["identificationModule"]["briefTitle"] += " (amended)"
            s["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"] = {
                "date": today,
                "type": "ACTUAL",
            }
            changed[nct_id(s)] = s["protocolSection"]["identificationModule"]["briefTitle"]
        srv.studies = new_set
        n_before = len(srv.page_requests())
        with make_client(srv.base_url) as client:
            result = update(store, client=client, page_size=100)
        sent = [r.params for r in srv.page_requests()[n_before:]]
    assert (
        result.runs[0].kind == "update"
        and result.runs[0].studies_seen == 5
        and result.runs[0].n_new == 5
    )
    assert sent and all(
        p["filter.advanced"]
        == f"(AREA[StudyType]INTERVENTIONAL) AND AREA[LastUpdatePostDate]RANGE[{since},MAX]"
        for p in sent
    )
    assert all(p["query.term"] == "CAR T" for p in sent)
    rows = store.con.execute(
        "SELECT record_id, count(*), max(CASE WHEN is_current THEN title END) FROM records "
        "WHERE record_id IN (SELECT unnest(?)) GROUP BY record_id",
        [list(changed)],
    ).fetchall()
    assert {r[0]: (r[1], r[2]) for r in rows} == {k: (2, v) for k, v in changed.items()}
    assert_exact(store, {nct_id(s) for s in small_studies})
    assert store.con.execute("SELECT count(*) FROM records").fetchone() == (455,)
    status = sync_status(store)[0]
    assert status["last_run"]["kind"] == "update" and status["n_runs"] == 2


def test_update_resumes_an_unfinished_full_sync(server: CtgovServer, store: Store) -> None:
    server.add_fault("status", status=503, page=2, times=50)
    with make_client(server.base_url, max_retries=0) as client, pytest.raises(FetchError):
        fetch(store, QUERY, client=client, page_size=100)
    server.faults.clear()
    with make_client(server.base_url) as client:
        result = update(store, client=client, page_size=100)
    assert result.runs[0].kind == "full" and result.runs[0].resumed_from_page == 2
    assert "filter.advanced" not in server.page_requests()[-1].params
    assert_exact(store, server.served_ids())


# ---------------------------------------------------------------- by id
def test_fetch_by_id(
    server: CtgovServer, store: Store, small_studies: list[dict[str, Any]]
) -> None:
    ids = [nct_id(s) for s in small_studies[:3]]
    with make_client(server.base_url) as client:
        result = fetch_ids(store, [ids[0], f"{ids[1]}, {ids[2].lower()}"], client=client)
        assert [s["nct_id"] for s in result.studies] == ids and all(
            s["new"] for s in result.studies
        )
        assert [r.path for r in server.requests] == [f"/studies/{i}" for i in ids]
        assert_exact(store, set(ids))
        with pytest.raises(FetchError, match="no such study"):
            fetch_ids(store, ["NCT99999999"], client=client)
        with pytest.raises(ConfigError):
            fetch_ids(store, ["12345"], client=client)
    assert sync_status(store) == []  # single-study refreshes are not saved queries


# ------------------------------------------------------------------ presets
def test_preset_runs_each_sub_query(tmp_path: Path) -> None:
    studies = load_studies(GENERAL_FILE)
    preset = get_preset("cell-therapy")
    with (
        CtgovServer(studies) as srv,
        celltrials.open(str(tmp_path / "p.duckdb")) as st,
        make_client(srv.base_url) as client,
    ):
        out = fetch_preset(st, "cell-therapy", client=client)
        sent = [r.params for r in srv.page_requests()]
        served = srv.served_ids()
        assert_exact(st, served)
        assert len(sync_status(st)) == len(preset.queries)
    assert (
        out["preset"] == "cell-therapy"
        and out["preset_version"] == preset.version
        and out["complete"]
    )
    assert [p["query.term"] for p in sent] == [q.expression() for q in preset.queries]
    assert all(
        len(request_url(DEFAULT_BASE_URL, {"query.term": p["query.term"]}, "x" * 64).encode())
        < MAX_URL_BYTES
        for p in sent
    )


# ------------------------------------------------------------------ CLI
def test_cli_json_equals_library_result(tmp_path: Path, server: CtgovServer) -> None:
    runner = CliRunner()
    db_cli, db_lib = tmp_path / "cli.duckdb", tmp_path / "lib.duckdb"
    args = [
        "--db",
        str(db_cli),
        "fetch",
        "--term",
        "CAR T",
        "--status",
        "recruiting,completed",
        "--base-url",
        server.base_url,
        "--rate",
        "0",
        "--page-size",
        "100",
        "--json",
    ]
    res = runner.invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    with celltrials.open(str(db_lib)) as st, make_client(server.base_url) as client:
        lib = fetch(
            st,
            Query.build(term="CAR T", status="RECRUITING,COMPLETED"),
            client=client,
            page_size=100,
        )
        assert json.loads(res.output) == json.loads(json.dumps(lib.to_dict(), default=str))
    res = runner.invoke(cli, ["--db", str(db_cli), "sync-status", "--json"], catch_exceptions=False)
    with celltrials.open(str(db_cli)) as st:
        assert json.loads(res.output) == json.loads(json.dumps(sync_status(st), default=str))
    res = runner.invoke(
        cli, ["--db", str(db_cli), "update", "--rate", "0", "--json"], catch_exceptions=False
    )
    assert res.exit_code == 0 and json.loads(res.output)["runs"][0]["kind"] == "update"


def test_cli_base_url_from_env_and_errors(tmp_path: Path, server: CtgovServer) -> None:
    runner = CliRunner()
    res = runner.invoke(
        cli,
        ["--db", str(tmp_path / "e.duckdb"), "-q", "fetch", "--term", "x", "--rate", "0"],
        env={"CELLTRIALS_CTGOV_URL": server.base_url},
        catch_exceptions=False,
    )
    assert res.exit_code == 0 and server.page_requests()
    with celltrials.open(str(tmp_path / "e.duckdb")) as st:
        assert sync_status(st)[0]["base_url"] == server.base_url
    res = runner.invoke(
        cli, ["--db", str(tmp_path / "e.duckdb"), "fetch", "--status", "sleeping", "--term", "x"]
    )
    assert res.exit_code != 0 and "unknown --status" in str(res.exception)
