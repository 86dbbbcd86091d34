#!/usr/bin/env python3
"""The summary of a scripts/gpu-check.sh folder, as OUT_DIR/summary.txt.

    python3 scripts/gpu-summary.py OUT_DIR

Reads what the check left there (steps.tsv, selftest.json, the runs'
events.jsonl and summary.json, bench.json) and writes, per run: the median
step time; the device memory NVML reported during training against the
run's device ledger; the PCIe bytes NVML reported per step against the
bytes the Link counted per step; then MEFT's step time against LoRA's and
the Parallel Adapter's on SmolLM2. Only the standard library; a missing
piece is said, not fatal.

NVML's PCIe counters are throughputs over a 20 ms window, sampled every
500 ms: bytes per step = the mean throughput over the samples taken while
the run trained x the mean step time, an estimate. RX is what the GPU
received (host to device), TX what it sent.
"""

import json
import os
import statistics
import sys


def size(n):
    if n is None:
        return "-"
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f} B"


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "-"


def secs(s):
    return f"{s:.3f} s" if s is not None else "-"


def table(rows, header):
    rows = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_events(path):
    events = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass  # a torn last line of a stopped run
    except OSError:
        pass
    return events


class Run:
    """One run directory, read back."""

    def __init__(self, path, ordinal):
        self.path = path
        self.events = read_events(os.path.join(path, "events.jsonl"))
        started = [i for i, e in enumerate(self.events) if e.get("type") == "run_started"]
        info = self.events[started[-1]]["info"] if started else {}
        self.name = info.get("name") or os.path.basename(path)
        self.adapter = info.get("adapter", "?")
        steps = [(i, e) for i, e in enumerate(self.events) if e.get("type") == "step"]
        self.steps = [e for _, e in steps]
        walls = [e["wall_ms"] / 1e3 for e in self.steps]
        self.median_step = statistics.median(walls) if walls else None
        self.mean_step = statistics.mean(walls) if walls else None
        done = [e["summary"] for e in self.events if e.get("type") == "finished"]
        self.summary = done[-1] if done else None
        failed = [e for e in self.events if e.get("type") in ("failed", "diverged", "stopped")]
        self.state = failed[-1]["type"] if failed else ("finished" if done else "unfinished")
        ledgers = [sum(e["device"].values()) for e in self.events if e.get("type") == "ledger"]
        self.ledger_peak = max(ledgers) if ledgers else None
        # Training: after the run started (model loaded, adapter built) up
        # to its last step; not the checkpoint or the evaluation after it.
        lo = started[-1] if started else 0
        hi = steps[-1][0] if steps else lo
        samples = [e for e in self.events[lo:hi + 1] if e.get("type") == "telemetry"]
        everything = [e for e in self.events if e.get("type") == "telemetry"]
        self.gpu_missing = next((e.get("gpu_unavailable") for e in everything if e.get("gpu_unavailable")), None)
        pick = lambda e: next((g for g in e.get("gpus", []) if g.get("index") == ordinal), None) or (e.get("gpus") or [None])[0]
        gpus = [g for g in map(pick, samples) if g]
        first = next((g for g in map(pick, everything) if g), None)
        self.samples = len(gpus)
        self.gpu_name = gpus[0]["name"] if gpus else None
        self.mem_before = first["mem_used"] if first else None
        self.mem_peak = max(g["mem_used"] for g in gpus) if gpus else None
        self.mem_total = gpus[0]["mem_total"] if gpus else None
        rx = [g["pcie_rx"] for g in gpus if g.get("pcie_rx") is not None]
        tx = [g["pcie_tx"] for g in gpus if g.get("pcie_tx") is not None]
        per_step = lambda v: statistics.mean(v) * self.mean_step if v and self.mean_step else None
        self.rx_per_step, self.tx_per_step = per_step(rx), per_step(tx)
        try:
            with open(os.path.join(path, "checkpoints.bytes")) as f:
                self.checkpoint_bytes = int(f.read().strip())
        except (OSError, ValueError):
            self.checkpoint_bytes = None

    def get(self, key):
        return self.summary.get(key) if self.summary else None


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gpu-summary.py OUT_DIR")
    out = sys.argv[1]
    if not os.path.isdir(out):
        sys.exit(f"gpu-summary: {out}: no such folder")
    lines = []
    say = lines.append

    env = []
    try:
        with open(os.path.join(out, "env.txt")) as f:
            # The settings, down to the first blank line (ldd's list follows).
            for l in f:
                if not l.strip():
                    break
                env.append(l.rstrip())
    except OSError:
        pass
    device = next((l.split(None, 1)[1] for l in env if l.startswith("device ")), "?")
    ordinal = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    say(f"GPU check of {os.path.abspath(out)}")
    lines += ["  " + l for l in env]

    say("")
    say("Steps")
    try:
        with open(os.path.join(out, "steps.tsv")) as f:
            rows = [l.rstrip("\n").split("\t") for l in f][1:]
        lines += table([[n, rc, f"{s} s"] for n, rc, s in rows], ["step", "exit", "time"])
    except (OSError, ValueError):
        say("  no steps.tsv")

    say("")
    st = read_json(os.path.join(out, "selftest.json"))
    if st:
        say(f"Selftest on {st['device']}: {'all ok' if st['ok'] else 'FAILED'}")
    else:
        say("Selftest: no selftest.json")
    # The lines as meft printed them, also those of a selftest cut short.
    try:
        with open(os.path.join(out, "logs", "selftest.log")) as f:
            lines += ["  " + l.rstrip() for l in f if l.strip()]
    except OSError:
        say("  no logs/selftest.log")

    runs_dir = os.path.join(out, "runs")
    runs = []
    if os.path.isdir(runs_dir):
        for d in sorted(os.listdir(runs_dir)):
            p = os.path.join(runs_dir, d)
            if os.path.isdir(p):
                runs.append(Run(p, ordinal))
    say("")
    say("Runs (step times measured by the trainer; bytes per step counted by the Link)")
    if runs:
        rows = []
        for r in runs:
            loss = f"{r.get('first_loss'):.3f} -> {r.get('final_loss'):.3f}" if r.summary else "-"
            tps = f"{r.get('tokens_per_s'):.0f}" if r.summary else "-"
            rows.append([r.name, r.adapter, r.state, len(r.steps), secs(r.median_step), tps, loss,
                         size(r.get("h2d_per_step")), size(r.get("d2h_per_step")), size(r.checkpoint_bytes)])
        lines += table(rows, ["run", "adapter", "state", "steps", "median step", "tokens/s",
                              "loss first -> final", "h2d/step", "d2h/step", "checkpoint"])
    else:
        say("  no runs")

    by_name = {r.name: r for r in runs}
    meft, lora, par = (by_name.get(f"smollm2-{k}") for k in ("meft", "lora", "parallel"))
    say("")
    say("SmolLM2 step time, median: MEFT against LoRA and the Parallel Adapter")
    if meft or lora or par:
        m = lambda r: r.median_step if r else None
        say(f"  MEFT {secs(m(meft))} · LoRA {secs(m(lora))} · Parallel {secs(m(par))}")
        say(f"  MEFT / LoRA {ratio(m(meft), m(lora))} · Parallel / LoRA {ratio(m(par), m(lora))}"
            f" · MEFT / Parallel {ratio(m(meft), m(par))}")
    else:
        say("  no SmolLM2 runs")

    say("")
    base = next((l.split(None, 2)[2] for l in env if l.startswith("headline base ")), "?")
    say(f"The headline on 24 GiB: {base}, random bf16 weights made on the device")
    plan = read_json(os.path.join(out, "headline-plan.json"))
    big = {k: by_name.get(f"headline-{k}") for k in ("meft", "meft-cache", "lora", "parallel")}
    if plan or any(big.values()):
        planned = plan["plan"]["device_total"] if plan else None
        dense = plan["dense_parallel_adapter"]["device_total"] if plan else None
        if plan:
            say(f"  planned: MEFT {size(planned)} (fits 24 GiB: {plan['plan'].get('fits')}), dense Parallel Adapter"
                f" {size(dense)} (fits: {plan['dense_parallel_adapter'].get('fits')})")
        rows = []
        for k, r in big.items():
            if not r:
                rows.append([k, "not run", "-", "-", "-", "-"])
                continue
            used = r.get("peak_device_used")
            fits = "-" if used is None else ("yes" if used <= 24 << 30 else "no")
            rows.append([k, r.state, size(used), fits,
                         ratio(used, planned) if k.startswith("meft") else "-", secs(r.median_step)])
        lines += table(rows, ["run", "state", "NVML peak (trainer)", "<= 24 GiB", "NVML / plan", "median step"])
        m, l = big["meft"], big["lora"]
        if m and l and m.median_step and l.median_step:
            say(f"  MEFT keeps {100 * l.median_step / m.median_step:.0f} % of LoRA's speed (the paper: >= 63 %)")
        c = big["meft-cache"]
        if m and c and m.median_step and c.median_step:
            say(f"  with the row cache: {secs(c.median_step)} a step, {ratio(c.median_step, m.median_step)} of without")
        say("  NVML peak (trainer): the device's used memory read by the trainer after each backward pass")
    else:
        say("  not run")

    say("")
    say("Device memory: NVML's used memory while training against the device ledger's peak")
    gpu_runs = [r for r in runs if r.mem_peak is not None]
    if gpu_runs:
        rows = [[r.name, size(r.mem_before), size(r.mem_peak), size(r.ledger_peak), ratio(r.mem_peak, r.ledger_peak),
                 ratio((r.mem_peak or 0) - (r.mem_before or 0), r.ledger_peak), r.samples] for r in gpu_runs]
        lines += table(rows, ["run", "NVML first", "NVML peak", "ledger peak", "peak / ledger",
                              "(peak - first) / ledger", "samples"])
        say(f"  {gpu_runs[0].gpu_name}, {size(gpu_runs[0].mem_total)}; NVML counts the CUDA context and"
            " whatever the allocator keeps, the ledger what the run holds")
    else:
        why = next((r.gpu_missing for r in runs if r.gpu_missing), None)
        say(f"  no NVML readings{': ' + why if why else ''}")

    say("")
    say("PCIe bytes per step: NVML (mean throughput while training x mean step time) against the Link's count")
    if gpu_runs:
        rows = [[r.name, size(r.rx_per_step), size(r.get("h2d_per_step")), ratio(r.rx_per_step, r.get("h2d_per_step")),
                 size(r.tx_per_step), size(r.get("d2h_per_step")), ratio(r.tx_per_step, r.get("d2h_per_step"))]
                for r in gpu_runs]
        lines += table(rows, ["run", "NVML RX", "Link h2d", "RX / h2d", "NVML TX", "Link d2h", "TX / d2h"])
        say("  RX = host to device, TX = device to host; NVML counts every transfer (the batch, the loss,"
            " the base's own copies), the Link only MEFT's")
    else:
        say("  no NVML readings")

    bench = read_json(os.path.join(out, "bench.json"))
    say("")
    if bench:
        say(f"Bench --quick on {bench.get('device')} ({bench.get('machine')}, {bench.get('seconds', 0):.0f} s): its checks")
        for s in bench.get("sections", []):
            for what, met in s.get("checks", []):
                say(f"  {'ok  ' if met else 'miss'} {what}")
    else:
        say("Bench: no bench.json (see logs/bench.log)")

    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
