"""Proof that a rollout's new nodes start every cached image from their cache, as pure logic.

manifest (the pod), evidence (kubelet events: hit or miss), timing (start-up stages), report
(verdict and renderings), pods (the sensor's plan and phases). Kubernetes calls live in
ml_cache.hooks.kubernetes, the wait in ml_cache.sensors.validation.
"""
