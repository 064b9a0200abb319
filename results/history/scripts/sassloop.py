"""Per-spec SASS: total instructions and the largest loop body (the largest block ending in a backward BRA; with
nested loops that is the outer one, so `loops` lists every loop's size), with an opcode histogram of that loop. Usage: python results/history/scripts/sassloop.py NAME [NAME...] (names: vimbench kernels static); DUMP=1 prints the
first name's loop"""
import os, re, subprocess, sys, tempfile, collections, json
os.environ.pop("TRITON_INTERPRET", None)
from pathlib import Path
from vimbench.kerneltools.static_check import kernel_specs, compile_spec, cuobjdump_path
LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
def sass_of(spec):
    cubin = compile_spec(spec)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "k.cubin"; p.write_bytes(cubin)
        return subprocess.run([str(cuobjdump_path()), "-sass", str(p)], capture_output=True, text=True).stdout
def loops(sass):
    ins = [(int(a, 16), op, rest) for a, op, rest in LINE.findall(sass)]
    out = []
    for i, (addr, op, rest) in enumerate(ins):
        if op.startswith("BRA"):
            m = re.search(r"0x([0-9a-f]+)", rest)
            if m and int(m.group(1), 16) < addr:
                tgt = int(m.group(1), 16)
                body = [o for a, o, _ in ins if tgt <= a <= addr]
                out.append(body)
    return ins, out
specs = {s.name: s for s in kernel_specs()}
res = {}
for name in sys.argv[1:]:
    sass = sass_of(specs[name])
    ins, ls = loops(sass)
    big = max(ls, key=len) if ls else []
    hist = collections.Counter(o.split(".")[0] for o in big)
    res[name] = dict(total=len(ins), loop=len(big), mufu=sum(o.startswith("MUFU") for o in big),
                     hist=dict(hist.most_common(14)), loops=sorted(len(b) for b in ls))
    print(name, json.dumps(res[name]))
if os.environ.get("DUMP"):
    sass = sass_of(specs[sys.argv[1]])
    ins, ls = loops(sass)
    big = max(ls, key=len)
    # print the loop region text
    addrs = [a for a, o, r in ins]
    lines = [f"{a:05x} {o}{r}" for a, o, r in ins]
    # find region by length match
    for body in [big]:
        pass
    tgt_i = None
    for i, (a, o, r) in enumerate(ins):
        if o.startswith("BRA"):
            m = re.search(r"0x([0-9a-f]+)", r)
            if m and int(m.group(1), 16) < a and sum(1 for x in ins if int(m.group(1),16) <= x[0] <= a) == len(big):
                t = int(m.group(1), 16); print("\n".join(l for (x, _, _), l in zip(ins, lines) if t <= x <= a)); break
