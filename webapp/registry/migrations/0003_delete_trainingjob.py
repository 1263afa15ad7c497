from django.db import migrations


class Migration(migrations.Migration):
    """Training jobs moved to their own app (webapp.jobs) with their table: only Django's picture
    of the model leaves here."""

    dependencies = [
        ('registry', '0002_training_jobs_and_role_models'),
        ('jobs', '0001_initial'),
    ]

    operations = [migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name='TrainingJob')],
                                                      database_operations=[])]
