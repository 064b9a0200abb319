"""A/B of the scan forward kernels: the tree's `kernels` package vs another copy (e.g. the one before fastmath),
in alternating subprocesses (each variant compiles its own kernels), do_bench medians. Vim-Ti layouts: u, delta
channel-last, B and C fp32 rows of a 48-wide x_dbl (as the bf16 and fp32 models run them). Usage:
  python results/history/scripts/abfast.py OTHER_ROOT [rounds]   (OTHER_ROOT holds a kernels/ package)
Writes $OUT/abfast.json; prints a table."""
import json, os, statistics, subprocess, sys

CASES = [("bf16", "halves", 64, 6085), ("fp32", "combined", 64, 6085), ("bf16", "combined", 64, 6085),
         ("bf16", "halves", 8, 6085), ("bf16", "halves", 64, 197)]


def child():
    import torch, triton
    from kernels.selective_scan import fwd
    rows = []
    for dt, form, B, L in CASES:
        E, N = 384, 16
        dtype = dict(bf16=torch.bfloat16, fp32=torch.float32)[dt]
        g = torch.Generator(device="cuda").manual_seed(0)
        r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
        xz = r(B, L, 2 * E).to(dtype)
        x_dbl = r(2, B, L, 48)
        u = r(2, B, L, E).to(dtype).transpose(2, 3)
        delta = (r(2, B, L, E) * 0.5 - 3).to(dtype).transpose(2, 3)
        A = -torch.arange(1, N + 1, device="cuda").float().repeat(2, E, 1)
        args = dict(u=u, delta=delta, A=A, B=x_dbl[..., :16].transpose(2, 3), C=x_dbl[..., 16:32].transpose(2, 3),
                    D=r(2, E), z=xz[..., E:].transpose(1, 2), delta_bias=r(2, E) - 3)
        out = fwd.bimamba_scan(**args, combine=form == "combined")
        ms = triton.testing.do_bench(lambda: fwd.bimamba_scan(**args, combine=form == "combined"),
                                     warmup=50, rep=400, return_mode="median")
        rows.append(dict(case=f"{dt}/{form}/b{B}_l{L}", ms=ms, checksum=out.float().abs().sum().item()))
    print("JSON" + json.dumps(rows))


def main():
    other, rounds = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2
    here = os.getcwd()
    res = {"tree": [], "other": []}
    for _ in range(rounds):
        for name, root in (("other", other), ("tree", here)):
            env = dict(os.environ, PYTHONPATH=f"{os.path.abspath(root)}:{here}")
            p = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True,
                               cwd=os.path.abspath(root))
            line = [l for l in p.stdout.splitlines() if l.startswith("JSON")]
            if not line:
                print(name, "failed:", p.stderr[-2000:]); continue
            res[name].append(json.loads(line[0][4:]))
    json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "abfast.json"), "w"), indent=1)
    print(f"{'case':28s} {'other ms':>10s} {'tree ms':>10s} {'tree/other':>10s}  (medians over rounds)")
    for i, (dt, form, B, L) in enumerate(CASES):
        o = statistics.median(r[i]["ms"] for r in res["other"]) if res["other"] else float("nan")
        t = statistics.median(r[i]["ms"] for r in res["tree"]) if res["tree"] else float("nan")
        print(f"{res['tree'][0][i]['case'] if res['tree'] else i!s:28s} {o:10.4f} {t:10.4f} {t / o:10.3f}")


if __name__ == "__main__":
    child() if "--child" in sys.argv else main()
