"""Paper-scale studies: the two papers' protocols on any model, locally or on Ray.

* :mod:`~whichway.studies.pairs` -- prompt-pair sources (Crisscrossed Captions + COCO, plain
  CSV/JSONL/Parquet files) and stratified, seeded sampling into similarity groups.
* :mod:`~whichway.studies.config` -- TOML study configs with ``--set section.key=value`` overrides.
* :mod:`~whichway.studies.store` -- resumable, atomic Parquet result store and run manifest;
  damaged results files are set aside and their units computed again.
* :mod:`~whichway.studies.verify` -- what a run directory holds: complete, missing, damaged.
* :mod:`~whichway.studies.executors` -- local and Ray executors over units of work.
* :mod:`~whichway.studies.prompt_study` / :mod:`~whichway.studies.latent_study` -- paper A's
  prompt-pair study and paper B's latent study.
* :mod:`~whichway.studies.stats` / :mod:`~whichway.studies.report` -- paired Wilcoxon tests and
  Markdown/CSV/PNG reports.

Names are imported lazily so that ``import whichway.studies`` stays cheap.
"""

from __future__ import annotations

from whichway._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "PairSet": "whichway.studies.pairs",
    "load_cxc": "whichway.studies.pairs",
    "load_pair_file": "whichway.studies.pairs",
    "load_coco_captions": "whichway.studies.pairs",
    "stratified_sample": "whichway.studies.pairs",
    "similarity_group": "whichway.studies.pairs",
    "pair_seed": "whichway.studies.pairs",
    "PromptStudyConfig": "whichway.studies.config",
    "LatentStudyConfig": "whichway.studies.config",
    "load_config": "whichway.studies.config",
    "write_config": "whichway.studies.config",
    "ResultStore": "whichway.studies.store",
    "Unit": "whichway.studies.executors",
    "UnitResult": "whichway.studies.executors",
    "WorkerSpec": "whichway.studies.executors",
    "LocalExecutor": "whichway.studies.executors",
    "RayExecutor": "whichway.studies.executors",
    "make_executor": "whichway.studies.executors",
    "run_units": "whichway.studies.executors",
    "paired_wilcoxon": "whichway.studies.stats",
    "significance_table": "whichway.studies.stats",
    "stars": "whichway.studies.stats",
    "run_prompt_study": "whichway.studies.prompt_study",
    "run_latent_study": "whichway.studies.latent_study",
    "prompt_report": "whichway.studies.report",
    "latent_report": "whichway.studies.report",
    "verify_run": "whichway.studies.verify",
    "VerifyReport": "whichway.studies.verify",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
