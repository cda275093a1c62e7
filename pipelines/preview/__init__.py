"""onegen.pipelines.preview: the static HTML report over a shards folder (`onegen preview`)."""
