"""Room for the API's client scope in idempotency keys: 'api:<user id>:<key>' with a key of up to 200 characters.

On PostgreSQL the column is widened (varchar(255): a catalogue change, no table rewrite). SQLite does not enforce a
varchar's length, and an AlterField would make it copy the whole task table: there only the state changes."""

from django.db import migrations, models


def _alter(length: int):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(
                f'ALTER TABLE "tasks_scantask" ALTER COLUMN "idempotency_key" TYPE varchar({length})')
    return run


class Migration(migrations.Migration):

    dependencies = [
        ('tasks', '0009_task_retried_by'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='scantask',
                    name='idempotency_key',
                    field=models.CharField(blank=True, editable=False, max_length=255, null=True),
                ),
            ],
            database_operations=[
                migrations.RunPython(_alter(255), reverse_code=_alter(200), elidable=False),
            ],
        ),
    ]
