"""onegen.pipelines.samples: what each task's training sample holds, from catalog + annotation rows.

Pure functions (no Ray): the build job calls them on its workers.
"""
