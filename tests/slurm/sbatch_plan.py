"""What the SLURM plugin would submit, from a dry run: no cluster needed.

    python tests/slurm/sbatch_plan.py OUT.jsonl -- <snakemake arguments, e.g. --profile profiles/slurm -n>

Runs Snakemake's own command line (so profiles, --set-resources, --set-threads and --default-resources are
applied exactly as in a real run) in dry-run mode, and for every job the dry run schedules writes one JSON
line to OUT.jsonl: rule, wildcards, whether the job runs on the submitting machine (a local rule), its
threads and resources as the main Snakemake process computed them, and, for submitted jobs, the sbatch
command line the SLURM executor plugin builds from them (its own functions, with placeholders for the run
id, log file and working folder). Used by tests/workflow/test_slurm.py.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    out_path, snakemake_args = argv[0], argv[2:]
    if "-n" not in snakemake_args and "--dry-run" not in snakemake_args and "--dryrun" not in snakemake_args:
        snakemake_args = [*snakemake_args, "--dry-run"]

    import snakemake.cli as cli
    from snakemake.executors import dryrun
    from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    parsed = {}
    original_args_to_api = cli.args_to_api

    def args_to_api(args, parser):  # keep the parsed command line (profiles applied) for the plugin settings
        parsed["args"] = args
        return original_args_to_api(args, parser)

    cli.args_to_api = args_to_api
    records = []

    def plain(value):
        return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)

    def record(job):
        args = parsed["args"]
        workflow = job.dag.workflow
        # A dry run executes everything "locally", so job.is_local is always true here; the localrules
        # directive (and rules without a shell/run, like `all`) is what decides it under a cluster executor.
        local = job.rule.name in workflow._localrules or job.rule.norun
        resources = {k: plain(v) for k, v in job.resources.items() if not k.startswith("_")}
        entry = {
            "rule": job.rule.name,
            "wildcards": dict(job.wildcards_dict),
            "local": bool(local),
            "threads": job.threads,
            "resources": resources,
            "sbatch": None,
        }
        if not local and args.executor == "slurm":
            settings = ExecutorPluginRegistry().get_plugin("slurm").get_settings(args)
            partition = job.resources.get("slurm_partition")
            account = job.resources.get("slurm_account")
            params = {
                "run_uuid": "RUN_ID",
                "slurm_logfile": "LOGFILE",
                "comment_str": f"rule_{job.rule.name}",
                "account": f" -A {account}" if account else "",
                "partition": f" -p {partition}" if partition else "",
                "workdir": "WORKDIR",
            }
            entry["sbatch"] = get_submit_command(job, params, settings=settings) + set_gres_string(job)
        records.append(entry)

    original_run_job = dryrun.Executor.run_job

    def run_job(self, job):
        for j in job.jobs if job.is_group() else [job]:
            record(j)
        return original_run_job(self, job)

    dryrun.Executor.run_job = run_job
    try:
        cli.main(snakemake_args)
    except SystemExit as e:
        code = e.code or 0
    else:
        code = 0
    with open(out_path, "w") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
