"""onegen.training"""
