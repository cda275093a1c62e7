"""onegen.pipelines"""
