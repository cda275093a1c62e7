"""onegen.model"""
