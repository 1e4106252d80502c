"""Output: the live progress line, the summary table, the JSON file, a Markdown table for
docs/performance.md, and the throughput-latency plot.
One module (~340 lines): every output is made from the same rows."""

import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from loadtest.procs import Tick
from loadtest.results import Machine, Report, RunResult
from loadtest.tally import Latency

KIB = 1024
MIB = 1024 * 1024
# Below this, the RSS a run adds is noise, not a per-connection figure.
MEMORY_MIN_CONNS = 100
# The summary's width when stdout is not a terminal: room for a sweep's columns.
PIPED_WIDTH = 240


class Display:
    """One live line while a run goes on (to stderr), then the summary (to stdout)."""

    def __init__(self, quiet: bool) -> None:
        self.console = Console(stderr=True)
        # Piped or redirected, rich would wrap the table at 80 columns: as wide as it needs.
        self.out = Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)
        self._live: Live | None = None
        self._quiet = quiet

    @contextmanager
    def live(self) -> Iterator["Display"]:
        if self._quiet:
            yield self
            return
        with Live(console=self.console, refresh_per_second=4, transient=True) as live:
            self._live = live
            try:
                yield self
            finally:
                self._live = None

    def note(self, text: str) -> None:
        if not self._quiet:
            self.console.print(Text(text, style="dim"))

    def tick(self, label: str) -> Tick:
        """The callback the load processes' counters are shown through."""
        last: list[float] = [time.monotonic(), 0.0, 0.0]
        rates = [0.0, 0.0]
        started = time.monotonic()

        def show(phase: str, totals: dict[str, float]) -> None:
            now = time.monotonic()
            if now - last[0] >= 1.0:
                rates[0] = (totals["acked"] - last[1]) / (now - last[0])
                rates[1] = (totals["frames"] - last[2]) / (now - last[0])
                last[:] = [now, totals["acked"], totals["frames"]]
            if self._live is None:
                return
            line = Text()
            line.append(f"{label} ", style="bold")
            line.append(f"{phase} {now - started:5.1f}s  ")
            line.append(f"conns {totals['connected']:,.0f}  ")
            line.append(f"sent {totals['sent']:,.0f}  ")
            line.append(f"answered {totals['acked']:,.0f} ({rates[0]:,.0f}/s)  ")
            line.append(f"frames {totals['frames']:,.0f} ({rates[1]:,.0f}/s)  ")
            errors = totals["errors"]
            line.append(f"errors {errors:,.0f}", style="red" if errors else "green")
            self._live.update(line)

        return show


def machine() -> Machine:
    cpu = platform.processor() or platform.machine()
    memory = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * KIB / (1024**3)
                break
    except OSError:
        pass
    one, five, fifteen = os.getloadavg()
    return Machine(
        cpu=cpu,
        cores=os.cpu_count() or 0,
        memory_gib=round(memory, 1),
        python=platform.python_version(),
        kernel=platform.release(),
        load_average_at_start=(round(one, 2), round(five, 2), round(fifteen, 2)),
    )


def new_report(target: str) -> Report:
    return Report(
        command=" ".join(["python -m loadtest", *sys.argv[1:]]),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        target=target,
    )


# -- the summary ---------------------------------------------------------------------------------


def _ms(value: Latency | None, name: str) -> str:
    return "" if value is None else f"{getattr(value, name):,.1f}"


def _num(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _errors(run: RunResult) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(run.errors.items())) or "0"


def cpu_us_per_frame(run: RunResult) -> float | None:
    """Server CPU per room frame delivered, over the window."""
    if run.usage is None or not run.frames_delivered_per_s:
        return None
    return run.usage.cpu_cores / run.frames_delivered_per_s * 1e6


def rows(report: Report) -> list[tuple[str, list[str]]]:
    """(metric, a cell per run): the same table for the terminal and for Markdown."""
    runs = report.runs
    gifting = any(r.gifts_sent for r in runs)
    table: list[tuple[str, list[str]]] = [
        ("server", [r.server for r in runs]),
        ("connections", [f"{r.connections:,}" for r in runs]),
        ("rate asked (/s)", [_num(r.target_rate) or ("max" if gifting else "") for r in runs]),
        ("window (s)", [f"{r.window_s:.1f}" for r in runs]),
    ]
    if gifting:
        table += [
            ("gifts acked /s", [_num(r.gifts_per_s) for r in runs]),
            ("ack p50 (ms)", [_ms(r.ack_latency, "p50_ms") for r in runs]),
            ("ack p90 (ms)", [_ms(r.ack_latency, "p90_ms") for r in runs]),
            ("ack p99 (ms)", [_ms(r.ack_latency, "p99_ms") for r in runs]),
            ("ack max (ms)", [_ms(r.ack_latency, "max_ms") for r in runs]),
            ("host credit p50 (ms)", [_ms(r.host_credit_latency, "p50_ms") for r in runs]),
            ("host credit p99 (ms)", [_ms(r.host_credit_latency, "p99_ms") for r in runs]),
            ("frames delivered /s", [_num(r.frames_delivered_per_s) for r in runs]),
            ("frames /viewer /s", [_num(r.frames_per_viewer_per_s, 1) for r in runs]),
            ("delivered / expected", [_num(r.delivery_ratio, 3) for r in runs]),
        ]
    if any(r.requests_per_s is not None for r in runs):
        kinds = sorted({k for r in runs for k in r.http_latency})
        table.append(("requests answered /s", [_num(r.requests_per_s) for r in runs]))
        for kind in kinds:
            cells = []
            for r in runs:
                lat = r.http_latency.get(kind)
                cells.append(f"{_ms(lat, 'p50_ms')} / {_ms(lat, 'p99_ms')}" if lat else "")
            table.append((f"{kind} p50 / p99 (ms)", cells))
    usage = [r.usage for r in runs]
    table += [
        (
            "server RSS /connection (KiB)",
            [
                _num(u.per_connection_bytes / KIB, 1)
                if u and u.per_connection_bytes is not None and r.connections >= MEMORY_MIN_CONNS
                else ""
                for r, u in zip(runs, usage, strict=True)
            ],
        ),
        ("server RSS end (MiB)", [_num(u.end_bytes / MIB, 1) if u else "" for u in usage]),
        ("server CPU (cores)", [_num(u.cpu_cores, 2) if u else "" for u in usage]),
        ("Valkey CPU (cores)", [_num(u.store_cpu_cores, 2) if u else "" for u in usage]),
        ("generator CPU (cores)", [_num(r.generator_cpu_cores, 2) for r in runs]),
    ]
    if gifting or any(r.requests_per_s is not None for r in runs):
        table += [
            ("server CPU (µs /answer)", [_num(u.cpu_us_per_gift) if u else "" for u in usage]),
            ("server CPU (µs /frame)", [_num(cpu_us_per_frame(r), 1) for r in runs]),
            (
                "Valkey CPU (µs /answer)",
                [_num(u.store_cpu_us_per_gift) if u else "" for u in usage],
            ),
        ]
    if gifting:
        table += [
            (
                "Redis round trips /gift",
                [_num(u.redis_round_trips_per_gift, 3) if u else "" for u in usage],
            ),
            (
                "Redis commands /gift",
                [_num(u.redis_commands_per_gift, 2) if u else "" for u in usage],
            ),
        ]
    table += [
        ("errors", [_errors(r) for r in runs]),
        (
            "coins missing",
            [str(r.coin_check.coins_missing) if r.coin_check else "" for r in runs],
        ),
    ]
    # A row no run has a figure for does not apply to these runs (e.g. memory per connection
    # of a run too small to tell, frames of HTTP buyers).
    return [(metric, cells) for metric, cells in table if any(cells)]


def print_summary(display: Display, report: Report) -> None:
    # The heading on a line of its own: as a table title it wraps to the table's width.
    display.out.print(f"giftstream loadtest · {report.started_at} · {report.target}")
    table = Table()
    table.add_column("")
    for run in report.runs:
        table.add_column(run.label, justify="right")
    for metric, cells in rows(report):
        style = (
            "red"
            if metric in ("errors", "coins missing") and any(c not in ("", "0") for c in cells)
            else None
        )
        table.add_row(metric, *cells, style=style)
    display.out.print(table)
    for name, value in report.ratios.items():
        display.out.print(f"  {name}: [bold]{value:.3f}[/bold]")
    for run in report.runs:
        if run.books:
            display.out.print(f"{run.label}, the books after the faults:")
            for name, value in run.books.items():
                display.out.print(f"  {name}: {value:,}")
            display.out.print("  faults: " + "; ".join(run.faults))
    if report.audit_clean is not None:
        colour = "green" if report.audit_clean else "red"
        display.out.print(f"[{colour}]{report.audit_output}[/{colour}]")
    if any("rate_limited" in r.errors for r in report.runs):
        display.out.print(
            "[yellow]rate_limited: the senders went over the server's gift rate per user;"
            " spread the load over more --senders (or lift the limit with --server-env)[/yellow]"
        )
    for failure in report.failures:
        display.out.print(f"[bold red]FAILED: {failure}[/bold red]")


def markdown(report: Report) -> str:
    m = report.machine
    lines = [
        f"Measured {report.started_at} on {m.cores} cores ({m.cpu}), {m.memory_gib} GiB,"
        f" Python {m.python}, load average at start {m.load_average_at_start[0]}"
        f" — `{report.command}`",
        "",
        "| | " + " | ".join(r.label for r in report.runs) + " |",
        "|---|" + "---:|" * len(report.runs),
    ]
    lines += [f"| {metric} | " + " | ".join(cells) + " |" for metric, cells in rows(report)]
    if report.ratios:
        lines.append("")
        lines += [f"- {name}: **{value:.3f}**" for name, value in report.ratios.items()]
    for run in report.runs:
        if run.books:
            lines += ["", f"{run.label}: the books after the faults", ""]
            lines += ["| | gifts |", "|---|---:|"]
            lines += [f"| {name} | {value:,} |" for name, value in run.books.items()]
            lines += ["", "Faults: " + "; ".join(run.faults) + "."]
    return "\n".join(lines) + "\n"


def write_json(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(report), indent=2) + "\n")


# -- the plot ----------------------------------------------------------------------------------


def plot(report: Report, path: Path) -> None:
    """Latency against acknowledged gifts/s, a point per run: the open-loop runs (a rate asked)
    as dots, the closed-loop one (as fast as answers come) as a star. No line joins them: on a
    shared machine a run can get less than the one before, and a line would suggest a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    ours = [r for r in report.runs if r.server == "giftstream" and r.ack_latency]
    paced = sorted((r for r in ours if r.target_rate), key=lambda r: r.target_rate or 0.0)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    series: list[tuple[str, Callable[[RunResult], float]]] = [
        ("ack p50", lambda r: r.ack_latency.p50_ms if r.ack_latency else math.nan),
        ("ack p99", lambda r: r.ack_latency.p99_ms if r.ack_latency else math.nan),
        (
            "host credit p99",
            lambda r: r.host_credit_latency.p99_ms if r.host_credit_latency else math.nan,
        ),
    ]
    for name, value in series:
        line = ax.plot([r.gifts_per_s for r in paced], [value(r) for r in paced], "o", label=name)
        for r in ours:
            if not r.target_rate:
                ax.plot(r.gifts_per_s, value(r), "*", markersize=12, color=line[0].get_color())
    for r in paced:
        ax.annotate(
            f"{r.target_rate:,.0f}/s asked",
            (r.gifts_per_s, r.ack_latency.p99_ms if r.ack_latency else 0),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=7,
        )
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("gifts acknowledged per second (★ = as fast as answers come, closed loop)")
    ax.set_ylabel("latency (ms, log scale)")
    m = report.machine
    members = ours[0].connections if ours else 0
    ax.set_title(
        f"storm: 1 room, {members:,} connections, open loop at each rate\n"
        f"{report.started_at[:16]} UTC, {m.cores} cores shared by generator, service and Valkey"
        f" (load average at start {m.load_average_at_start[0]})",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
