#!/bin/sh
# Managed by the slurm role (slurm-config).
# Slurm epilog: remove the job's private /tmp files once the job ends.
[ -n "$SLURM_JOB_ID" ] || exit 0
[ -n "$SLURM_JOB_USER" ] || exit 0
find /tmp -xdev -user "$SLURM_JOB_USER" -mindepth 1 -delete 2>/dev/null
exit 0
