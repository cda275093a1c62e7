"""onegen.pipelines.recipe: a whole dataset in one TOML file, parsed into the jobs' configs and run."""
