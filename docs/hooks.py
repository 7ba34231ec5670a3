"""MkDocs hook: serve ``benchmarks/results/`` as ``results/`` so the docs link to the files their tables come from."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def on_files(files: Files, config) -> Files:
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file():
            files.append(File.generated(config, "results/" + path.relative_to(RESULTS).as_posix(),
                                        abs_src_path=str(path)))
    return files
