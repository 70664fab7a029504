"""A toy stage list for the drivers' tests: numbers instead of videos, shaped like the pair
pipeline (tasks -> actor pool -> tasks) with one stage more, a filter in an actor pool that
writes what the first stage wrote, as a GPU filter between prepare and track would.

Each input's item is the length of its name; `keep-even` drops odd items; `square` (skipped for
a unit with no item left) squares the rest; `rows` writes `<unit>.json` into the output
directory and returns one manifest-like row per input. A unit whose name holds "boom" fails in
`keep-even` every time; one whose name holds "die" kills its `square` actor the first time.
"""
from __future__ import annotations

import json
import os

from pipeline.stages import Resources, Stage


class Lengths(Stage):
    name, writes = "lengths", "items"

    @staticmethod
    def resources(execution):
        return Resources(cpus=execution.task_cpus, spread=True)

    def setup(self, cfg):
        self.setups = getattr(self, "setups", 0) + 1

    def process(self, ctx, unit):
        return [len(os.path.basename(uri)) for uri in unit.inputs]

    def count(self, items):
        return len(items)


class KeepEven(Stage):
    name, reads, writes = "keep-even", ("items",), "items"

    @staticmethod
    def resources(execution):
        return Resources(cpus=execution.tracker_cpus, actors=execution.tracker_actors)

    def process(self, ctx, unit, items):
        if "boom" in unit.name:
            raise ValueError("boom")
        return [i for i in items if i % 2 == 0]

    def count(self, items):
        return len(items)


class Square(Stage):
    name, reads, writes, skip_empty, worker_name = "square", ("items",), "squares", True, "squarer"

    @staticmethod
    def resources(execution):
        return Resources(cpus=execution.tracker_cpus, actors=1)

    def process(self, ctx, unit, items):
        marker = os.path.join(ctx.output_dir, f"{unit.name}.died")
        if "die" in unit.name and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)   # this actor's process dies, as with its node
        return [i * i for i in items]


class Rows(Stage):
    name, reads, writes = "rows", ("items", "squares"), "rows"

    @staticmethod
    def resources(execution):
        return Resources(cpus=execution.task_cpus)

    def setup(self, cfg):
        self.closed = False

    def process(self, ctx, unit, items, squares):
        rows = []
        for uri in unit.inputs:
            n = len(os.path.basename(uri))
            kept = n in items
            rows.append(dict(source_uri=uri, status="ok" if kept else "filtered:odd",
                             num_pairs=int(kept), decoded_frames=n,
                             square=squares[items.index(n)] if kept else None))
        with open(os.path.join(ctx.output_dir, f"{unit.name}.json"), "w") as f:
            json.dump(rows, f, sort_keys=True)
        return rows

    def close(self):
        self.closed = True


TOY_STAGES = (Lengths, KeepEven, Square, Rows)
