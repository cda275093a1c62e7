"""onegen.pipelines.demo: `onegen demo` and its fixtures.

Tiny random checkpoints written from configs (also what the tests and CPU benches load), the procedural
multiview scene, and the demo's short training leg. Shipped for the demo; the annotators never import it.
"""
