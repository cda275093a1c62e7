"""onegen.pipelines.runtime: Ray set-up and the unit machinery every job runs on.

Starting or joining Ray (loopback only when local), worker start-up hooks and guards, units planned on
the driver and committed on workers, and the job records that make a rerun resume the same job.
"""
