"""Video -> drag-pair dataset engine. Stages are plain functions/classes testable without Ray;
`pipeline.run` wires them together on Ray. Imports `schemas` only (and the tracker it runs)."""
