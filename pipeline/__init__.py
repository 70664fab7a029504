"""Video -> drag-pair dataset engine. The work on a unit is a declared list of stages
(`pipeline.stages`), each testable without Ray; `pipeline.run` plans a build and drives the list
on Ray. Imports `schemas` only (and the tracker it runs)."""
