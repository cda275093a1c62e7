"""onegen.core: the vocabulary every room shares, below all of them (imports nothing else of onegen).

The task table and its prompts, camera geometry and Plücker rays, checkpoint lookup, image codecs,
the user-error type and the quiet job output. Everything else imports from here; nothing here imports
upwards (docs/architecture.md).
"""
