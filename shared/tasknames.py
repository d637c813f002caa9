"""Task names and queues: the contract between the API (which sends by name) and the workers."""

TASK_FANOUT = "herald.fanout"
TASK_DELIVER = "herald.deliver"
TASK_SWEEP = "herald.sweep"
TASK_REDRIVE = "herald.redrive"  # a bulk dead-letter redrive or purge (bulk_job row)
TASK_RETENTION = "herald.retention"


def sweep_queue(queue_name: str) -> str:
    # The sweeper has its own queue so a deep backlog of deliveries cannot delay retries and recovery.
    return f"{queue_name}.sweep"
