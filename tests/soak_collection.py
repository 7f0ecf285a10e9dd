"""Kill -9 soak of a BM25-only collection: does every commit that returned survive a SIGKILL
of the writer, while readers open, search and close the collection next to it?

    python tests/soak_collection.py --trials 200 [--seed 0] [--readers 2] [--keep DIR]

In a temporary folder, each trial starts a writer process that adds, replaces and deletes
documents and commits in a loop, and 1-2 reader processes that repeatedly open the collection,
search it and close it (as ``fastrag search`` does). The writer appends to a side file,
fsynced, the collection state it is about to commit ("pending") and, after `commit` returns,
the state it committed ("committed"): {id: sha1 of text}. At a random time the parent kills
the writer (and the readers) with SIGKILL, then opens the collection and checks that it opens,
that it holds exactly the last committed state or the pending one (the commit in progress
may or may not have landed), and that a search for a document's unique word finds it.

Counts: losses (a trial whose collection matches neither state: committed documents missing,
with another text, or documents that were never committed), failed opens, search failures,
reader errors (any exception in a reader). Ends with one line
``SUMMARY trials=N losses=N failed_opens=N reader_errors=N search_failures=N`` and exits 1
on any loss, failed open or search failure (reader errors are reported, not fatal), 2 when a
child process cannot import fastrag.

Every random choice comes from --seed. To soak another copy of the package (e.g. an older
commit), run with ``python -S`` and PYTHONPATH naming it and the site-packages folder: the
child processes inherit both.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

N_IDS = 40
SETUP_ERROR = 4  # a child could not import fastrag (e.g. while it is being rebuilt)
WORDS = ["river", "stone", "cloud", "forest", "lamp", "paper", "signal", "harbor", "copper"]


def digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def unique_word(text: str) -> str:
    return text.split()[0]


def append_record(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _child(role: str, args: argparse.Namespace, trial: int, index: int = 0) -> list[str]:
    flags = ["-S"] if sys.flags.no_site else []
    return [
        sys.executable, *flags, __file__, "--role", role, "--dir", str(args.dir),
        "--seed", str(args.seed), "--trial", str(trial), "--index", str(index),
    ]


# ---------------------------------------------------------------------------- writer
def writer(folder: Path, rng: random.Random) -> None:
    import fastrag

    col = fastrag.Collection.open(folder / "col")
    state = {d.id: digest(d.text) for d in col.documents()}
    log = folder / "records.jsonl"
    (folder / "writer-ready").write_text("1")
    counter = 0
    while True:
        visible = dict(state)
        for _ in range(rng.randint(1, 3)):
            if visible and rng.random() < 0.3:
                gone = rng.sample(sorted(visible), min(len(visible), rng.randint(1, 3)))
                col.delete(gone)
                for d in gone:
                    del visible[d]
            else:
                ids = rng.sample([f"doc{i}" for i in range(N_IDS)], rng.randint(1, 4))
                texts = []
                for d in ids:
                    counter += 1
                    word = f"w{os.getpid()}x{counter}q"
                    filler = " ".join(rng.choices(WORDS, k=rng.randint(1, 30)))
                    texts.append(f"{word} {d} {filler}")
                col.add(texts, ids=ids)
                visible.update((d, digest(t)) for d, t in zip(ids, texts, strict=True))
        append_record(log, {"kind": "pending", "by": "writer", "state": visible})
        col.commit()
        state = visible
        append_record(log, {"kind": "committed", "by": "writer", "state": state})


# ---------------------------------------------------------------------------- reader
def reader(folder: Path, rng: random.Random, index: int) -> None:
    import fastrag

    errors = folder / f"reader-errors-{index}.txt"
    while True:
        try:
            col = fastrag.Collection.open(folder / "col")
            try:
                for _ in range(rng.randint(1, 3)):
                    col.search(rng.choice(WORDS), k=5, method="bm25")
            finally:
                col.close()
        except Exception as e:  # every failure of a reader is counted
            with open(errors, "a", encoding="utf-8") as f:
                f.write(f"{type(e).__name__}: {e}\n")


# ---------------------------------------------------------------------------- parent
def read_records(path: Path) -> tuple[dict | None, dict | None]:
    """(last committed state, the pending state after it or None); a torn last line (the
    writer killed while appending) is ignored."""
    committed: dict | None = {}
    pending = None
    if not path.exists():
        return committed, pending
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec["kind"] == "committed":
            committed, pending = rec["state"], None
        else:
            pending = rec["state"]
    return committed, pending


def check(folder: Path, rng: random.Random) -> tuple[str, str, dict | None]:
    """('ok' | 'loss' | 'failed_open' | 'search_failure', detail, the state found) of the
    collection now."""
    import fastrag

    committed, pending = read_records(folder / "records.jsonl")
    try:
        col = fastrag.Collection.open(folder / "col")
    except Exception as e:
        return "failed_open", f"{type(e).__name__}: {e}", None
    try:
        try:
            docs = {d.id: d.text for d in col.documents()}
            n = len(col)
        except Exception as e:
            return "failed_open", f"reading documents: {type(e).__name__}: {e}", None
        state = {d: digest(t) for d, t in docs.items()}
        if state != committed and state != pending:
            missing = sorted(d for d in committed if d not in state)
            changed = sorted(d for d in committed if d in state and state[d] != committed[d])
            extra = sorted(d for d in state if d not in committed)
            return "loss", (
                f"{len(state)} docs vs {len(committed)} committed "
                f"(pending: {None if pending is None else len(pending)}): missing {missing[:5]}, "
                f"other text {changed[:5]}, never committed {extra[:5]}"
            ), state
        if n != len(state):
            return "loss", f"len() says {n}, documents() gives {len(state)}", state
        for d in rng.sample(sorted(docs), min(3, len(docs))):
            word = unique_word(docs[d])
            try:
                hits = [h.id for h in col.search(word, k=3, method="bm25")]
            except Exception as e:
                return "search_failure", f"search {word!r}: {type(e).__name__}: {e}", state
            if hits != [d]:
                return "search_failure", f"search {word!r} gave {hits}, expected [{d!r}]", state
        return "ok", f"{len(state)} docs", state
    finally:
        col.close()


def kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.kill(p.pid, signal.SIGKILL)
    p.wait()


def run_trials(args: argparse.Namespace) -> int:
    import fastrag

    rng = random.Random(args.seed)
    fastrag.Collection.create(args.dir / "col", encoder=None, analyzer="english").close()
    counts = {"trials": 0, "losses": 0, "failed_opens": 0, "reader_errors": 0,
              "search_failures": 0}
    examples: dict[str, list[str]] = {}
    commits = 0
    started = time.monotonic()
    for trial in range(args.trials):
        for f in args.dir.glob("reader-errors-*.txt"):
            f.unlink()
        (args.dir / "writer-ready").unlink(missing_ok=True)
        writer_log = args.dir / "writer-stderr.txt"
        with open(writer_log, "w") as log:
            procs = [subprocess.Popen(_child("writer", args, trial), stderr=log)]
        n_readers = args.readers if args.readers else rng.randint(1, 2)
        for i in range(n_readers):
            with open(args.dir / f"reader-stderr-{i}.txt", "w") as log:
                procs.append(subprocess.Popen(_child("reader", args, trial, i), stderr=log))
        # wait until the writer has opened the collection, then let it run a random while
        t0 = time.monotonic()
        while not (args.dir / "writer-ready").exists() and procs[0].poll() is None:
            if time.monotonic() - t0 > 60:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, args.max_run))
        exits = [p.poll() for p in procs]
        for p in procs:
            kill(p)
        if SETUP_ERROR in exits:
            print("a child process could not import fastrag (is the package being rebuilt?): "
                  + (args.dir / "writer-stderr.txt").read_text()[-500:], file=sys.stderr)
            return 2
        writer_exit = exits[0]
        counts["trials"] += 1
        if writer_exit is not None:  # the writer died by itself (failed to open, or worse)
            counts["failed_opens"] += 1
            tail = writer_log.read_text().strip().splitlines()[-1:] or [""]
            examples.setdefault("failed_opens", []).append(
                f"trial {trial}: writer exited {writer_exit}: {tail[0]}"
            )
        errors = []
        for f in args.dir.glob("reader-errors-*.txt"):
            errors += f.read_text(encoding="utf-8").splitlines()
        for i, code in enumerate(exits[1:]):
            if code is not None:  # a reader died by itself
                tail = (args.dir / f"reader-stderr-{i}.txt").read_text().strip().splitlines()
                errors.append(f"reader exited {code}: {(tail or [''])[-1]}")
        counts["reader_errors"] += len(errors)
        if errors:
            examples.setdefault("reader_errors", []).extend(errors[:2])
        outcome, detail, state = check(args.dir, rng)
        key = {"loss": "losses", "failed_open": "failed_opens",
               "search_failure": "search_failures"}.get(outcome)
        if key:
            counts[key] += 1
            examples.setdefault(key, []).append(f"trial {trial}: {detail}")
        records = args.dir / "records.jsonl"
        if records.exists():
            commits += records.read_text().count('"by": "writer", "kind": "committed"')
        if args.verbose:
            print(f"trial {trial}: {outcome} {detail} readers_errors={len(errors)}", flush=True)
        if key and args.keep:
            shutil.copytree(args.dir, args.keep / f"trial{trial}", dirs_exist_ok=True)
        if outcome == "failed_open":
            # go on from what is there, so that later trials still count: the state of a
            # second open, or a new collection when it does not open at all
            try:
                col = fastrag.Collection.open(args.dir / "col")
                state = {d.id: digest(d.text) for d in col.documents()}
                col.close()
            except Exception:
                shutil.rmtree(args.dir / "col")
                fastrag.Collection.create(args.dir / "col", encoder=None,
                                          analyzer="english").close()
                state = {}
        # the state found is the baseline of the next trial (the commit in progress when the
        # writer was killed may have landed); a torn last line of the writer is dropped
        records.write_text(
            json.dumps({"kind": "committed", "by": "parent", "state": state}) + "\n"
        )
    for key, lines in examples.items():
        print(f"{key}: {len(lines)} example(s)")
        for line in list(dict.fromkeys(lines))[:5]:
            print(f"    {line[:300]}")
    print(f"commits recorded: {commits}; elapsed: {time.monotonic() - started:.0f} s")
    print(
        f"SUMMARY trials={counts['trials']} losses={counts['losses']} "
        f"failed_opens={counts['failed_opens']} reader_errors={counts['reader_errors']} "
        f"search_failures={counts['search_failures']}"
    )
    return 1 if counts["losses"] or counts["failed_opens"] or counts["search_failures"] else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--readers", type=int, default=0, help="readers per trial (0: 1 or 2)")
    ap.add_argument("--max-run", type=float, default=0.8,
                    help="the writer is killed up to this many seconds after it opened")
    ap.add_argument("--keep", type=Path, help="copy the folder of every failed trial here")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--role", choices=["parent", "writer", "reader"], default="parent",
                    help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--trial", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role != "parent":
        rng = random.Random(f"{args.seed}-{args.trial}-{args.role}-{args.index}")
        try:
            import fastrag  # noqa: F401
        except Exception:
            traceback.print_exc()
            sys.exit(SETUP_ERROR)
        try:
            (writer if args.role == "writer" else reader)(args.dir, rng, *(
                [] if args.role == "writer" else [args.index]))
        except Exception:
            traceback.print_exc()
            sys.exit(3)
        return
    with tempfile.TemporaryDirectory(prefix="fastrag-soak-") as d:
        args.dir = Path(d)
        sys.exit(run_trials(args))


if __name__ == "__main__":
    main()
