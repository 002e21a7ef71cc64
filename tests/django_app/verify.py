#!/usr/bin/env python3
"""Checks this Django app against the reference schema and consumer-host's DDL,
on SQLite and on a throwaway PostgreSQL server that it starts and stops.

    python3 tests/django_app/verify.py            (from the repository root)

Environment (all optional):
  VENV        the virtualenv with requirements.txt installed; made when missing
              (default tests/django_app/.venv)
  SQLITE_DDL  consumer-host's SQLite schema (default migrations/0001_django_chat.sql)
  PG_DDL      consumer-host's PostgreSQL schema (default migrations/postgres/0001_django_chat.sql)
  PGBIN       PostgreSQL's bin folder (default the newest /usr/lib/postgresql/*/bin);
              without one the PostgreSQL checks are skipped
As root, initdb refuses to run: the server then runs as the `postgres` user
(runuser -u postgres), in a temporary folder it owns.

Checks:
  sqlite-schema      migrate on an empty file = the reference dump's CREATE statements
  sqlite-two-step    same with CHAT_MIGRATIONS=two_step, statement order included
  pg-a-idempotent    Django migrates; the DDL applied twice on top changes no pg_dump line
  pg-b-same-schema   the DDL alone makes the four tables exactly as Django does
  pg-b-fake-initial  then `migrate --fake-initial` fakes useraccount 0001 and chat 0001,
                     and the ORM reads rows written with SQL and writes its own
  sqlite-c-fake-initial  the same on SQLite with SQLITE_DDL and the reference rows
  two-step-fake-initial  with CHAT_MIGRATIONS=two_step `--fake-initial` fails (chat 0002
                     is not initial), `migrate --fake chat` then `migrate` adopts it
Ends with 'N passed, N failed'.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV = Path(os.environ.get("VENV", HERE / ".venv"))
SQLITE_DDL = Path(os.environ.get("SQLITE_DDL", ROOT / "migrations" / "0001_django_chat.sql"))
PG_DDL = Path(os.environ.get("PG_DDL", ROOT / "migrations" / "postgres" / "0001_django_chat.sql"))
REFERENCE = ROOT / "tests" / "fixtures" / "django_chat.sql"
FOUR = ["useraccount_user", "chat_conversation", "chat_conversation_users", "chat_conversationmessage"]

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)


def run(cmd, env=None, check_rc=True, **kw):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if check_rc and p.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def python():
    py = VENV / "bin" / "python"
    if not py.exists():
        run([sys.executable, "-m", "venv", str(VENV)])
        run([str(VENV / "bin" / "pip"), "install", "-q", "-r", str(HERE / "requirements.txt")])
    return str(py)


def manage(db_url, *args, layout="", check_rc=True):
    env = dict(os.environ, CHAT_DB_URL=db_url, CHAT_MIGRATIONS=layout)
    return run([python(), str(HERE / "manage.py"), *args], env=env, cwd=HERE, check_rc=check_rc)


def chat_statements(sql):
    """CREATE statements of the four tables, IF NOT EXISTS removed, in order."""
    out = []
    for line in sql.splitlines():
        line = line.strip()
        if not line.startswith("CREATE "):
            continue
        line = re.sub(r" IF NOT EXISTS", "", line)
        m = re.search(r'(?:TABLE|ON) "([^"]+)"', line)
        if m and m.group(1) in FOUR:
            out.append(line)
    return out


def sqlite_schema(path):
    return run(["sqlite3", str(path), ".schema"]).stdout


def sqlite_checks(tmp):
    reference = chat_statements(REFERENCE.read_text())
    for layout, name in (("", "sqlite-schema"), ("two_step", "sqlite-two-step")):
        db = tmp / f"django_{layout or 'default'}.sqlite3"
        manage(str(db), "migrate", layout=layout)
        got = chat_statements(sqlite_schema(db))
        same_set = sorted(got) == sorted(reference)
        if layout:
            check(name, got == reference, "identical, order included" if got == reference else "\n".join(got))
        else:
            check(name, same_set, "identical statements" if same_set else "\n".join(got))

    # c: consumer-host's SQLite DDL plus the reference rows, then --fake-initial.
    db = tmp / "host_made.sqlite3"
    run(["sqlite3", str(db)], input=SQLITE_DDL.read_text())
    rows = "\n".join(l for l in REFERENCE.read_text().splitlines() if l.startswith("INSERT"))
    run(["sqlite3", str(db)], input=rows)
    out = manage(str(db), "migrate", "--fake-initial").stdout
    faked = "useraccount.0001_initial... FAKED" in out and "chat.0001_initial... FAKED" in out
    same = sorted(sqlite_schema(db).splitlines()) == sorted(sqlite_schema(tmp / "django_default.sqlite3").splitlines())
    seeded = json.loads(manage(str(db), "chat_seed", "--user", "carol@example.com:Carol",
                               "--user", "alice@example.com", "--message", "from the ORM").stdout)
    dumped = json.loads(manage(str(db), "chat_dump").stdout)
    ids = [m["id"] for m in dumped]
    ok = (faked and same and "7992fb26-4fc4-40d8-bde8-a6c68ec40aad" in ids
          and seeded["messages"][0]["id"] in ids
          and dumped[0]["created_at"] == "2026-11-25T17:22:22.535044+00:00")
    check("sqlite-c-fake-initial", ok, f"faked={faked} schema-as-django={same} messages={len(dumped)}")

    # The two-step layout: chat 0002 is not initial, --fake-initial cannot fake it.
    db = tmp / "host_made_two_step.sqlite3"
    run(["sqlite3", str(db)], input=SQLITE_DDL.read_text())
    p = manage(str(db), "migrate", "--fake-initial", layout="two_step", check_rc=False)
    failed = p.returncode != 0 and 'table "chat_conversationmessage" already exists' in p.stderr
    manage(str(db), "migrate", "--fake", "chat", layout="two_step")
    manage(str(db), "migrate", layout="two_step")
    check("two-step-fake-initial", failed, "--fake-initial fails on chat 0002; `migrate --fake chat` adopts")


class Postgres:
    def __init__(self, tmp, pgbin):
        self.bin = pgbin
        self.dir = tmp / "pg"
        self.dir.mkdir()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.as_user = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            tmp.chmod(0o755)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    @staticmethod
    def newest_bin():
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
        return found[-1].parent if found else ""

    def start(self):
        data = self.dir / "data"
        run(self.as_user + [str(self.bin / "initdb"), "-D", str(data), "-U", "postgres",
                            "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"])
        run(self.as_user + [str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-w",
                            "-o", f"-h 127.0.0.1 -p {self.port} -k {self.dir}", "start"])

    def stop(self):
        run(self.as_user + [str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"],
            check_rc=False)

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def psql(self, db, *args, **kw):
        return run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                    "-v", "ON_ERROR_STOP=1", "-q", "-X", *args, db], **kw)

    def dump(self, db, tables=()):
        args = [str(self.bin / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                "--schema-only"]
        for t in tables:
            args += ["-t", t]
        out = run(args + [db]).stdout
        # \restrict / \unrestrict carry a random key on each run.
        return "\n".join(l for l in out.splitlines() if not re.match(r"\\(un)?restrict ", l))


def pg_checks(tmp):
    pgbin = os.environ.get("PGBIN") or Postgres.newest_bin()
    if not pgbin or not (Path(pgbin) / "initdb").exists():
        print("skip PostgreSQL checks: no PostgreSQL bin folder (set PGBIN)")
        return
    pg = Postgres(tmp, Path(pgbin))
    pg.start()
    try:
        ddl = PG_DDL.read_text()
        # a: Django makes it, the DDL changes nothing.
        pg.psql("postgres", "-c", "CREATE DATABASE django_made")
        manage(pg.url("django_made"), "migrate")
        before = pg.dump("django_made")
        pg.psql("django_made", "-1", input=ddl)
        pg.psql("django_made", "-1", input=ddl)
        after = pg.dump("django_made")
        check("pg-a-idempotent", before == after, f"{len(before.splitlines())} pg_dump lines unchanged")

        # b: the DDL makes it, Django adopts it.
        pg.psql("postgres", "-c", "CREATE DATABASE host_made")
        pg.psql("host_made", "-1", input=ddl)
        same = pg.dump("host_made", FOUR) == pg.dump("django_made", FOUR)
        check("pg-b-same-schema", same, "pg_dump of the four tables identical to Django's")
        pg.psql("host_made", input="""
            INSERT INTO useraccount_user VALUES ('', NULL, false, '9f5ba441036f4f399ea6258e3206e909',
              'alice@example.com', 'Alice', true, false, '2026-11-25 17:22:22.526833+00');
            INSERT INTO useraccount_user VALUES ('', NULL, false, 'c189712e-871d-45de-8f11-1a3b1de97c30',
              'bob@example.com', 'Bob', true, false, now());
            INSERT INTO chat_conversation VALUES ('22de0f4fc84e47be889cd61b856492bd', now(), now());
            INSERT INTO chat_conversation_users (conversation_id, user_id) VALUES
              ('22de0f4fc84e47be889cd61b856492bd', '9f5ba441036f4f399ea6258e3206e909'),
              ('22de0f4fc84e47be889cd61b856492bd', 'c189712e871d45de8f111a3b1de97c30');
            INSERT INTO chat_conversationmessage VALUES ('7992fb264fc440d8bde8a6c68ec40aad', 'Hi Bob',
              '2026-11-25 17:22:22.535044+00', '22de0f4fc84e47be889cd61b856492bd',
              '9f5ba441036f4f399ea6258e3206e909', 'c189712e871d45de8f111a3b1de97c30');
        """)
        out = manage(pg.url("host_made"), "migrate", "--fake-initial").stdout
        faked = "useraccount.0001_initial... FAKED" in out and "chat.0001_initial... FAKED" in out
        seeded = json.loads(manage(pg.url("host_made"), "chat_seed", "--user", "carol@example.com:Carol",
                                   "--user", "bob@example.com", "--message", "from the ORM", "--tokens").stdout)
        dumped = json.loads(manage(pg.url("host_made"), "chat_dump").stdout)
        first = dumped[0]
        ok = (faked and len(dumped) == 2 and first["id"] == "7992fb26-4fc4-40d8-bde8-a6c68ec40aad"
              and first["created_at"] == "2026-11-25T17:22:22.535044+00:00"
              and first["created_by_name"] == "Alice"
              and dumped[1]["id"] == seeded["messages"][0]["id"]
              and len(seeded["memberships"]) == 2)
        check("pg-b-fake-initial", ok, f"faked={faked} messages={len(dumped)}")
    finally:
        pg.stop()


def main():
    tmp = Path(tempfile.mkdtemp(prefix="django_app_verify."))
    try:
        sqlite_checks(tmp)
        pg_checks(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
