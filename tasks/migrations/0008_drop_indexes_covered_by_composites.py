"""Drop four single-column foreign-key indexes that a composite index already serves (its leading column):

- tasks_scantask.pool_id            <- task_pool_fifo_idx (pool, status, created_at)
- tasks_scantask.assigned_scanner_id <- task_scanner_status_idx (assigned_scanner, status)
- tasks_scantask.api_token_id       <- task_api_token_created_idx (api_token, created_at)
- tasks_taskevent.task_id           <- taskevent_task_time_idx (task, created_at)

Each cost a B-tree update on every task and every event written (events are the most frequent writes) and served
no query the composite does not. The fields' db_index=False is recorded in the state; the database only drops the
indexes (by the names Django gave them, the same on SQLite and PostgreSQL), because an AlterField would make
SQLite copy the whole table, four times."""

import django.db.models.deletion
from django.db import migrations, models

INDEXES = (  # (index, table, column)
    ("tasks_scantask_api_token_id_12fb68f1", "tasks_scantask", "api_token_id"),
    ("tasks_scantask_assigned_scanner_id_adcf52eb", "tasks_scantask", "assigned_scanner_id"),
    ("tasks_scantask_pool_id_e6797068", "tasks_scantask", "pool_id"),
    ("tasks_taskevent_task_id_bfe419b4", "tasks_taskevent", "task_id"),
)


class Migration(migrations.Migration):

    dependencies = [
        ('pools', '0003_pool_allow_any_target'),
        ('scanners', '0003_scanner_allow_plain_http_and_events'),
        ('tasks', '0007_client_policies_and_approval'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='scantask',
                    name='api_token',
                    field=models.ForeignKey(blank=True, db_index=False, editable=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='tasks', to='tasks.apitoken'),
                ),
                migrations.AlterField(
                    model_name='scantask',
                    name='assigned_scanner',
                    field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='assigned_tasks', to='scanners.scanner'),
                ),
                migrations.AlterField(
                    model_name='scantask',
                    name='pool',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='tasks', to='pools.pool'),
                ),
                migrations.AlterField(
                    model_name='taskevent',
                    name='task',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='events', to='tasks.scantask'),
                ),
    
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=[f'DROP INDEX IF EXISTS "{index}"' for index, _, _ in INDEXES],
                    reverse_sql=[f'CREATE INDEX "{index}" ON "{table}" ("{column}")' for index, table, column in INDEXES],
                ),
            ],
        ),
    ]
