"""The tally of gpushards.sh: per shard the pytest summary line, or, where the shard was stopped before its end, the
tests its progress lines show finished ('.' passed, 'F' failed, 's' skipped, 'E' error, 'x'/'X' xfailed/xpassed);
then the total and the FAILED/ERROR lines. usage: python gpushards_tally.py WORK_DIR N"""
import pathlib
import re
import sys

PROGRESS = re.compile(r"^([.FsExX]+)\s*(\[\s*\d+%\])?$")
MARKS = {".": "passed", "F": "failed", "s": "skipped", "E": "errors", "x": "xfailed", "X": "xpassed"}


def tally(text: str) -> tuple[dict[str, int], bool]:
    """Counts by outcome and whether the run ended (a pytest summary line)."""
    lines = text.strip().splitlines()
    last = lines[-1] if lines else ""
    found = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", last)
    if found and " in " in last:
        return {("errors" if what.startswith("error") else what): int(num) for num, what in found}, True
    counts: dict[str, int] = {}
    for line in lines:
        match = PROGRESS.match(line.strip())
        if match:
            for mark in match.group(1):
                counts[MARKS[mark]] = counts.get(MARKS[mark], 0) + 1
    return counts, False


def main(work: str, shards: int) -> None:
    total: dict[str, int] = {}
    stopped = 0
    problems = []
    for i in range(shards):
        path = pathlib.Path(work, f"gputests-shard{i}.txt")
        text = path.read_text() if path.exists() else ""
        counts, ended = tally(text)
        planned = pathlib.Path(work, f"gpu-ids-{i}.txt")
        planned_n = len(planned.read_text().split()) if planned.exists() else 0
        stopped += not ended and planned_n > 0
        shown = ", ".join(f"{v} {k}" for k, v in counts.items()) or "none finished"
        print(f"shard {i}: {shown} of {planned_n}{'' if ended else ' (stopped before its end)'}")
        for key, value in counts.items():
            total[key] = total.get(key, 0) + value
        problems += [line for line in text.splitlines() if line.startswith(("FAILED", "ERROR"))]
    print("total:", ", ".join(f"{v} {k}" for k, v in total.items()) or "none finished",
          f"({stopped} shard(s) stopped before their end)" if stopped else "")
    for line in problems[:20]:
        print(line)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
