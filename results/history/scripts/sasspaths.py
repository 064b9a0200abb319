"""Static SASS of one `vimbench kernels static` spec, with constexpr overrides: total instructions, each loop's size
(a block ending in a backward BRA), spill instructions, and for loops of 100-1,100 instructions the
forward branches inside them (position, instructions skipped), from which the executed path lengths follow (an
if/else of the pairs walk: loop - else block, and loop - if block - 1). Session o.
usage (repo root, no GPU; under the box's compiler: a venv with triton==3.6.0):
  python results/history/scripts/sasspaths.py scan_bwd/combined/bf16 CARRY_H=False
  python results/history/scripts/sasspaths.py scan_bwd/combined/bf16 CARRY_H=True maxnreg=168
  python results/history/scripts/sasspaths.py scan_bwd/combined/bf16 sig:scratch_ptr=*bf16"""
import collections, dataclasses, os, re, subprocess, sys, tempfile
os.environ.pop("TRITON_INTERPRET", None)
from pathlib import Path
from vimbench.kerneltools.static_check import compile_spec, cuobjdump_path, kernel_specs

LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def sass_of(spec):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(compile_spec(spec))
        return subprocess.run([str(cuobjdump_path()), "-sass", str(path)], capture_output=True, text=True).stdout


def target(rest):
    m = re.search(r"0x([0-9a-f]+)", rest)
    return int(m.group(1), 16) if m else None


spec = {s.name: s for s in kernel_specs()}[sys.argv[1]]
# sig:ARG=TYPE replaces an argument's type (session w: sig:scratch_ptr=*bf16 keeps the pointer's alignment hint)
sig = {k[4:]: v for k, v in (kv.split("=", 1) for kv in sys.argv[2:] if kv.startswith("sig:"))}
over = {k: eval(v) for k, v in (kv.split("=", 1) for kv in sys.argv[2:] if not kv.startswith("sig:"))}
maxnreg = over.pop("maxnreg", spec.maxnreg)
signature = {**spec.signature, **{k: v + spec.signature[k][len(spec.signature[k].partition(":")[0]):]
                                  for k, v in sig.items()}}
spec = dataclasses.replace(spec, constexprs={**spec.constexprs, **over}, maxnreg=maxnreg, signature=signature)
ins = [(int(a, 16), op, rest) for a, op, rest in LINE.findall(sass_of(spec))]
loops = [[x for x in ins if target(r) <= x[0] <= a] for a, op, r in ins
         if op.startswith("BRA") and target(r) is not None and target(r) < a]
count = lambda body, prefix: sum(1 for _, o, _ in body if o.startswith(prefix))  # noqa: E731
print(sys.argv[1], over, f"maxnreg={maxnreg}", "instructions", len(ins), "STL", count(ins, "STL"),
      "LDL", count(ins, "LDL"))
for body in sorted(loops, key=len):
    ops = collections.Counter(o.split(".")[0] for _, o, _ in body)
    shown = ("LDL", "STL", "MUFU", "FFMA", "FMUL", "MOV", "IMAD", "BRA")
    line = f"loop {len(body)}: " + " ".join(f"{k} {ops.get(k, 0)}" for k in shown)
    if os.environ.get("SASS_ALL_OPS"):  # every opcode of the loop, most frequent first
        line += " | " + " ".join(f"{k} {n}" for k, n in ops.most_common() if k not in shown)
    if 100 < len(body) < 1100:
        fwd = [(k, sum(1 for x in body if a < x[0] < target(r))) for k, (a, o, r) in enumerate(body)
               if o.startswith("BRA") and target(r) is not None and target(r) > a]
        line += f"; forward branches (position, skipped): {fwd}"
    print(line)
