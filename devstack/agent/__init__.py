"""The local SSM agent: Run Command invocations of sandbox instances, run for real.

documents: what a Command document and SendCommand parameters turn into (data, never code);
models: the invocations and their state; runner: the processes that carry them out.
"""
