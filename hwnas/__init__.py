"""hwnas: hardware-aware neural architecture search and deployment.

Profile candidate ops on the target, search under a latency budget with a
differentiable method, export the derived child net and check the budget on
the artifact itself.
"""

__version__ = "0.1.0"
