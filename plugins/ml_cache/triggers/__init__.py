"""Deferrable waits, each an `AwsBaseWaiterTrigger` over a (botocore or our JSON) waiter.

They live in plugins/ (not the DAG bundle) because the triggerer imports them by path.
"""
