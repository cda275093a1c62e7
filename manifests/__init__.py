"""onegen.manifests"""
