from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("endpoints", "0004_trafficstop"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="expiry_warned_for",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
