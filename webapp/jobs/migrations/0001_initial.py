import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('projects', '0001_initial'),
        ('registry', '0002_training_jobs_and_role_models'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    # The table exists already (registry_trainingjob, made by the registry's 0002): only Django's
    # picture of it moves to this app.
    operations = [migrations.SeparateDatabaseAndState(state_operations=[
        migrations.CreateModel(
            name='TrainingJob',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('lora', 'LoRA adapter for a role'), ('distill', 'Distilled student (fewer layers)'), ('prune', 'Structured pruning'), ('quantize', 'int8 quantization')], max_length=10)),
                ('role', models.SlugField(blank=True, help_text='The agent role a LoRA adapter is for (writer).')),
                ('options', models.JSONField(blank=True, default=dict, help_text='Recipe options, e.g. {"steps": 50, "lr": 0.0002, "rank": 16}.')),
                ('since', models.DateField(blank=True, help_text='Only sections finished on or after this day.', null=True)),
                ('until', models.DateField(blank=True, help_text='Only sections finished on or before this day.', null=True)),
                ('heldout', models.FloatField(default=0.2, help_text='Share of documents held out for evaluation.')),
                ('processes', models.PositiveSmallIntegerField(default=1, help_text='Processes under torchrun (one per GPU).')),
                ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('cancelling', 'Cancelling'), ('done', 'Done (output registered, staged)'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], default='queued', max_length=12)),
                ('step', models.PositiveIntegerField(default=0)),
                ('total_steps', models.PositiveIntegerField(default=0)),
                ('losses', models.JSONField(blank=True, default=list, editable=False)),
                ('metrics', models.JSONField(blank=True, default=dict, editable=False)),
                ('output_dir', models.CharField(blank=True, editable=False, max_length=500)),
                ('checkpoint', models.CharField(blank=True, editable=False, help_text='The newest checkpoint a stopped job left.', max_length=500)),
                ('error', models.TextField(blank=True, editable=False)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('started_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('finished_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('heartbeat_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('adapter', models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='registry.adapterversion')),
                ('base_model', models.ForeignKey(help_text='The model trained on (LoRA), distilled, pruned or quantized.', on_delete=django.db.models.deletion.PROTECT, related_name='training_jobs', to='registry.basemodel')),
                ('created_by', models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('produced_model', models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='registry.basemodel')),
                ('project', models.ForeignKey(blank=True, help_text="Only this project's accepted sections (default: all).", null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='projects.project')),
            ],
            options={
                'db_table': 'registry_trainingjob',
                'ordering': ['-created_at'],
            },
        ),
    ], database_operations=[])]
