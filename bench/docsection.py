"""One benchmark's section of docs/benchmarks.md, per CPU: written beside the other CPUs'
sections, never over them.

A run's section is headed ``## <TOPIC> on <CPU> (`<llvm cpu>`), <date>``.  ``--update-docs``
replaces the section with exactly that heading (a rerun on the same CPU the same day), else
inserts the new one after the last section whose heading starts with ``## <TOPIC>`` (or at
the end of the file): the tables of other CPUs and other days stay.
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def cpu_label() -> str:
    """``<model name> (`<llvm cpu>`)``, e.g. ``AMD EPYC (`znver5`)``."""
    from graphc.backends.llvm.native import jit
    model = "x86-64"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} (`{jit.host_target().cpu}`)"


def heading(topic: str, date: str | None = None) -> str:
    date = date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    return f"## {topic} on {cpu_label()}, {date}"


def update(topic: str, body: str, path: Path = DOC, head: str | None = None) -> str:
    """Write ``body`` under this CPU's and day's heading for ``topic``; returns the
    heading.  Only that section is replaced; every other section is kept as it is."""
    head = head or heading(topic)
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    section = head + "\n\n" + body.strip() + "\n"
    sections = list(re.finditer(r"^## .*$", doc, re.M))
    ends = [m.start() for m in sections[1:]] + [len(doc)]
    same = [(m.start(), e) for m, e in zip(sections, ends) if m.group(0) == head]
    if same:
        a, e = same[0]
        doc = doc[:a] + section + ("\n" if e < len(doc) else "") + doc[e:]
    else:
        mine = [e for m, e in zip(sections, ends)
                if m.group(0) == f"## {topic}" or m.group(0).startswith(f"## {topic} ")]
        at = mine[-1] if mine else len(doc)
        before = doc[:at].rstrip("\n") + "\n\n"
        doc = before + section + ("\n" + doc[at:] if at < len(doc) else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc.rstrip("\n") + "\n")
    return head
