from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("runs", "0006_task_waiting_ahead")]

    operations = [migrations.RemoveField(model_name="writingrun", name="model_name")]
