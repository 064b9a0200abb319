"""Run GPU-marked tests in parallel shards on the box (compiles dominate: ~15-20 s per new kernel layout, so
shards on separate CPU cores finish several times sooner than one pytest). usage (repo root, on the box):
    python results/history/scripts/gpushards.py SHARDS TIMEOUT_S [PATH...]   (no PATH: the whole suite)
Tests are split into contiguous blocks of the collected order (tests of one parametrized function share kernel
layouts and so the compile cache). GPUSHARDS_PART=p/P runs only the p-th (0-based) of P contiguous parts of the
collected tests, so that P calls cover the suite (session ah: 6 shards did not finish all 372 within 540 s on an
H100). A shard stopped by its TIMEOUT_S still counts the tests its progress lines show finished.
Back under $OUT (the device tool returns at most 8 files): gputests-summary.txt (each shard's result, the total,
the FAILED/ERROR lines) and gputests-shards.tar.gz (the id lists and shard logs)."""
import os, pathlib, re, subprocess, sys, tarfile, tempfile, time

PROGRESS = re.compile(r"^([.FsExX]+)\s*(\[\s*\d+%\])?$")
MARKS = {".": "passed", "F": "failed", "s": "skipped", "E": "errors", "x": "xfailed", "X": "xpassed"}


def tally(text):
    """(counts by outcome, whether pytest ended with its summary line) of one shard's -q log."""
    lines = text.strip().splitlines()
    last = lines[-1] if lines else ""
    found = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", last)
    if found and " in " in last:
        return {("errors" if what.startswith("error") else what): int(num) for num, what in found}, True
    counts = {}
    for line in lines:
        match = PROGRESS.match(line.strip())
        for mark in match.group(1) if match else "":
            counts[MARKS[mark]] = counts.get(MARKS[mark], 0) + 1
    return counts, False


def main():
    shards, limit, paths = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    out = pathlib.Path(os.environ.get("OUT", "."))
    part, parts = (int(v) for v in os.environ.get("GPUSHARDS_PART", "0/1").split("/"))
    work = pathlib.Path(tempfile.mkdtemp())
    ids = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "--collect-only", "-p", "no:cacheprovider",
                          *paths], capture_output=True, text=True).stdout.splitlines()
    ids = [i for i in ids if "::" in i]
    per_part = -(-len(ids) // parts)
    ids = ids[part * per_part:(part + 1) * per_part]
    if not ids:  # (an empty id list would run the whole suite in every shard)
        sys.exit(f"no GPU tests collected (part {part}/{parts})")
    summary = [f"{len(ids)} GPU tests (part {part}/{parts}) in {shards} shards, {limit} s each at most"]
    print(summary[0], flush=True)
    size = -(-len(ids) // shards)
    procs = []
    t0 = time.time()
    for k in range(shards):
        block = ids[k * size:(k + 1) * size]
        if not block:
            continue
        (work / f"gpu-ids-{k}.txt").write_text("\n".join(block) + "\n")
        f = open(work / f"gputests-shard-{k}.txt", "w")
        procs.append((k, len(block), f, subprocess.Popen(
            ["timeout", str(limit), sys.executable, "-m", "pytest", "-q", "-rfE", "-m", "gpu", "-p", "no:cacheprovider",
             *block], stdout=f, stderr=subprocess.STDOUT)))
    total, stopped, problems = {}, 0, []
    for k, planned, f, p in procs:
        p.wait()
        f.close()
        text = (work / f"gputests-shard-{k}.txt").read_text()
        counts, ended = tally(text)
        stopped += not ended
        for key, value in counts.items():
            total[key] = total.get(key, 0) + value
        problems += [line for line in text.splitlines() if line.startswith(("FAILED", "ERROR"))]
        shown = ", ".join(f"{v} {n}" for n, v in counts.items()) or "none finished"
        summary.append(f"shard {k} rc={p.returncode} {time.time() - t0:.0f}s: {shown} of {planned}"
                       + ("" if ended else " (stopped before its end)"))
        print(summary[-1], flush=True)
    summary.append("total: " + (", ".join(f"{v} {n}" for n, v in total.items()) or "none finished")
                   + (f" ({stopped} shard(s) stopped before their end)" if stopped else ""))
    summary += problems[:20]
    print("\n".join(summary[-1 - len(problems[:20]):]))
    (out / "gputests-summary.txt").write_text("\n".join(summary) + "\n")
    with tarfile.open(out / "gputests-shards.tar.gz", "w:gz") as tar:
        tar.add(work, arcname="gputests-shards")


if __name__ == "__main__":
    main()
