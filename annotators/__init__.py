"""onegen.annotators"""
