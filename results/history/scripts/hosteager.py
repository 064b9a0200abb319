"""Eager Vim-Ti forward at 224 px (bf16 autocast, inference mode) timed by wall clock with a synchronize per
forward (medians of 60, after 10 warm-up), for this tree and for other trees given as roots (each holding
kernels/ and vimbench/), in alternating subprocesses; then a cProfile of 20 forwards of this tree (own time, top
20). Usage: python results/history/scripts/hosteager.py [ROOT ...]. Writes $OUT/hosteager.json."""
import json, os, statistics, subprocess, sys, time


def child(batch):
    import torch
    from vimbench.models.registry import create_model
    m = create_model("vim_t", img_size=224, backend="triton").cuda().eval()
    x = torch.randn(batch, 3, 224, 224, device="cuda")

    def f():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            return m(x)
    for _ in range(10):
        f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(60):
        t = time.perf_counter(); f(); torch.cuda.synchronize(); ts.append((time.perf_counter() - t) * 1e3)
    res = dict(batch=batch, ms=statistics.median(ts))
    if "--prof" in sys.argv:
        import cProfile, io, pstats
        pr = cProfile.Profile(); pr.enable()
        for _ in range(20):
            f()
        torch.cuda.synchronize(); pr.disable()
        s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(20); res["prof"] = s.getvalue()[-6000:]
    print("JSON" + json.dumps(res))


def main():
    here = os.getcwd()
    roots = [("tree", here)] + [(r, r) for r in sys.argv[1:]]
    out = {name: [] for name, _ in roots}
    prof = None
    for rnd in range(2):
        for name, root in roots:
            for batch in (1, 64):
                env = dict(os.environ, PYTHONPATH=os.path.abspath(root))
                args = [sys.executable, os.path.abspath(__file__), "--child", str(batch)]
                if name == "tree" and batch == 1 and rnd == 0:
                    args.append("--prof")
                p = subprocess.run(args, env=env, capture_output=True, text=True, cwd=os.path.abspath(root))
                line = [l for l in p.stdout.splitlines() if l.startswith("JSON")]
                if not line:
                    print(name, batch, "failed", p.stderr[-1500:]); continue
                r = json.loads(line[0][4:])
                prof = r.pop("prof", prof)
                out[name].append(r)
                print(name, r, flush=True)
    json.dump(dict(rows=out, prof=prof), open(os.path.join(os.environ.get("OUT", "/tmp"), "hosteager.json"), "w"), indent=1)
    print(prof)


if __name__ == "__main__":
    child(int(sys.argv[2])) if "--child" in sys.argv else main()
