"""A search shared by two worker processes through a real PostgreSQL server, and a worker
killed mid-trial (SIGKILL) that loses no finished trial.

The server is started on loopback in a temporary directory (initdb + pg_ctl from the Debian
package `postgresql`, run as the `postgres` OS user when the tests run as root, since the
server refuses to run as root). The test is skipped, saying why, only when no server can be
started (package or driver missing, initdb/pg_ctl failing).
"""
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUDY = "pg"


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL test skipped: the driver psycopg is not installed "
                    "(pip install 'psycopg[binary]')")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL test skipped: no initdb/pg_ctl found (apt-get install postgresql)")
    user = None
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("PostgreSQL test skipped: running as root and there is no 'postgres' "
                        "OS user to run the server as")
        user = "postgres"
    base = Path(tempfile.mkdtemp(prefix="netgraft-pg-"))
    base.chmod(0o755)
    data = base / "data"
    if user:
        shutil.chown(base, user)
    port = _free_port()

    def run(*cmd, timeout=60):
        return subprocess.run(cmd, user=user, capture_output=True, text=True, timeout=timeout)

    try:
        r = run(initdb, "-D", str(data), "-U", "netgraft", "--auth=trust", "-E", "UTF8")
        if r.returncode != 0:
            pytest.skip(f"PostgreSQL test skipped: initdb failed: {r.stderr.strip()[-300:]}")
        r = run(pg_ctl, "-D", str(data), "-l", str(base / "log"), "-w", "-t", "30", "-o",
                f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        if r.returncode != 0:
            log = (base / "log").read_text()[-500:] if (base / "log").exists() else ""
            pytest.skip(f"PostgreSQL test skipped: the server did not start: "
                        f"{(r.stderr or r.stdout).strip()[-300:]} {log}")
        yield f"postgresql://netgraft@127.0.0.1:{port}/postgres"
    finally:
        if data.exists():
            run(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def _worker(url: str, pool: Path, trials: int, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "netgraft.nas", "--dataset", "digits", "--image-size", "16",
           "--train-size", "320", "--test-size", "200", "--trials", str(trials),
           "--storage", url, "--study", STUDY, "--pool", str(pool), "--heartbeat", "1",
           "--grace", "3", "--threads", "1", "--min-similarity", "0", "-q", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _study(url):
    import optuna
    return optuna.load_study(study_name=STUDY, storage=url)


def test_two_workers_share_a_study_and_a_killed_worker_loses_nothing(pg_url, tmp_path):
    from netgraft.nas import budget_counts

    pool = tmp_path / "pool"
    # --- two workers, one study, one pool
    workers = [_worker(pg_url, pool, 5) for _ in range(2)]
    outs = [w.communicate(timeout=150)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(outs)
    study = _study(pg_url)
    counts = budget_counts(study)
    assert counts["complete"] == 5 and counts["running"] == 0, counts
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len({t.user_attrs["worker"] for t in trials}) == 2   # both workers did trials
    numbers = {t.number for t in trials}
    for t in trials:
        a = t.user_attrs
        assert (pool / f"{a['pool_key']}.safetensors").is_file()
        assert (pool / f"{a['pool_key']}.json").is_file()
        if a["parent"] is not None:  # lineage points to an existing entry of a finished trial
            assert (pool / f"{a['parent']}.safetensors").is_file()
            assert a["parent_trial"] in numbers and a["coverage"] > 0
    assert sum(t.user_attrs["parent"] is not None for t in trials) >= 3

    # --- a worker killed with SIGKILL in the middle of a trial
    finished = {t.number: (t.values, t.datetime_complete) for t in study.trials
                if t.state.name == "COMPLETE"}
    # the same settings (a study keeps what its accuracies were measured with): a trial takes
    # about 2 s here, so it is killed well inside one
    victim = _worker(pg_url, pool, 7)
    deadline = time.time() + 60
    killed = None
    while time.time() < deadline and killed is None:
        running = [t for t in _study(pg_url).trials if t.state.name == "RUNNING"]
        if running and running[0].user_attrs.get("worker", "").endswith(f":{victim.pid}"):
            time.sleep(0.2)
            victim.send_signal(signal.SIGKILL)
            killed = running[0].number
        time.sleep(0.1)
    victim.wait(timeout=10)
    assert killed is not None, "the victim never started a trial"
    study = _study(pg_url)
    assert {t.number: (t.values, t.datetime_complete) for t in study.trials
            if t.number in finished} == finished  # nothing finished was lost or changed

    # --- a restarted worker fails the dead trial, retries it and completes the study
    again = _worker(pg_url, pool, 7)
    out = again.communicate(timeout=120)[0]
    assert again.returncode == 0, out
    study = _study(pg_url)
    by_number = {t.number: t for t in study.trials}
    dead = by_number[killed]
    assert dead.state.name == "FAIL" and dead.user_attrs["fail_reason"].startswith("interrupted")
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert retry[0].params == dead.params
    counts = budget_counts(study)
    assert counts["complete"] == 7 and counts["interrupted"] == 1 and counts["running"] == 0
    for number, (values, done) in finished.items():
        assert (by_number[number].values, by_number[number].datetime_complete) == (values, done)
