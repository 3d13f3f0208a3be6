"""The Celery application. Configuration lives in Django settings under CELERY_*."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

from project.logging import request_id_var

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("gatehouse")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
def _bind_task_id(task_id: str, **_: object) -> None:
    # Log lines written while a task runs carry its id, as request lines carry theirs.
    request_id_var.set(f"task-{task_id}")


@task_postrun.connect
def _unbind_task_id(**_: object) -> None:
    request_id_var.set("-")
