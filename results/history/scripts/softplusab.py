"""Session o: softplus with log1p as a polynomial (`fwd.SOFTPLUS_LOG1P_POLY`, one MUFU lg2 per (token, channel)
fewer in every 16-bit scan kernel; static only when written, kernels/NOTES.md "Session o") against the lg2 form, in
alternating subprocesses (the flag is read at import: VIMBENCH_SOFTPLUS_POLY=0 / 1), CUDA-graph replays, us:
the inference scan (bf16 halves, Vim-Ti 1248 px batch 64 and 224 px batch 128), the training forward (checkpoints
every CHECKPOINT_CHUNK) and backward in the training op's forms (8 x 6,085 and 128 x 197). Each child also reports
the inference scan's largest error against the fp32 torch reference (relative to its largest magnitude).
usage (repo root, on the box): python results/history/scripts/softplusab.py [rounds] ; writes $OUT/softplusab.json
SMOKE=1 (CPU, TRITON_INTERPRET=1): tiny shapes, no timing (checks the script itself)."""
import json, os, subprocess, sys

SMOKE = os.environ.get("SMOKE") == "1"


def child():
    import torch
    from kernels.selective_scan import bwd, fwd
    from kernels.selective_scan.op import CHECKPOINT_CHUNK
    from kernels.selective_scan.reference import bimamba_scan_ref
    from vimbench.kerneltools.kernel_ops import _scan_inputs
    from vimbench.kerneltools.registry import OpShape
    dev, E = ("cpu", 16) if SMOKE else ("cuda", 384)
    timer = (lambda fn: None) if SMOKE else __import__("timing").graph_us
    rows = []
    for batch, length in (((2, 37),) if SMOKE else ((64, 6085), (128, 197))):
        x = _scan_inputs(dirs=2)(OpShape(batch=batch, channels=E, length=length), torch.bfloat16, dev)
        out = fwd.bimamba_scan(**x, combine=False)
        ref = bimamba_scan_ref(**{k: v if v is None or k == "A" else v.float() for k, v in x.items()}, combine=False)
        err = float((out.float() - ref).abs().max() / ref.abs().max())
        rows.append(dict(case=f"infer {batch}x{length}", us=timer(lambda: fwd.bimamba_scan(**x, combine=False)),
                         rel_err=err))
        del out, ref, x
    for batch, length in (((1, 37),) if SMOKE else ((8, 6085), (128, 197))):
        x = _scan_inputs(dirs=2)(OpShape(batch=batch, channels=E, length=length), torch.bfloat16, dev)
        y, ck = fwd.bimamba_scan_fwd_save(**x, combine=True, chunk=CHECKPOINT_CHUNK)
        g = torch.randn_like(y).mul_(0.1)
        rows.append(dict(case=f"train fwd {batch}x{length}",
                         us=timer(lambda: fwd.bimamba_scan_fwd_save(**x, combine=True, chunk=CHECKPOINT_CHUNK))))
        rows.append(dict(case=f"train bwd {batch}x{length}", us=timer(lambda: bwd.bimamba_scan_bwd(
            g, **x, checkpoints=ck, combine=True, chunk=CHECKPOINT_CHUNK, dz_halves=True,
            bc_rows_dtype=torch.bfloat16))))
        del x, y, ck, g
    print("JSON" + json.dumps(dict(poly=bool(fwd.SOFTPLUS_LOG1P_POLY), rows=rows)), flush=True)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    out_dir = os.environ.get("OUT", "/tmp")
    runs = []
    for r in range(rounds):
        for poly in (("0", "1") if r % 2 == 0 else ("1", "0")):
            env = dict(os.environ, VIMBENCH_SOFTPLUS_POLY=poly)
            proc = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True)
            line = next((s for s in proc.stdout.splitlines() if s.startswith("JSON")), None)
            if line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:])
                raise SystemExit(f"child VIMBENCH_SOFTPLUS_POLY={poly} failed")
            runs.append(json.loads(line[4:]))
            print(runs[-1], flush=True)
            json.dump(dict(commit=os.environ.get("VIMBENCH_GIT_COMMIT"), runs=runs),
                      open(f"{out_dir}/softplusab.json", "w"), indent=1)
    if SMOKE:
        return
    mean = {}
    for run in runs:
        for row in run["rows"]:
            mean.setdefault((row["case"], run["poly"]), []).append(row["us"])
    print("case | lg2 us | polynomial us (means over rounds)")
    for case in dict.fromkeys(c for c, _ in mean):
        a, b = mean[(case, False)], mean[(case, True)]
        print(f"{case:24s} {sum(a) / len(a):9.1f} {sum(b) / len(b):9.1f}")


if __name__ == "__main__":
    child() if "--child" in sys.argv else main()
