from __future__ import annotations

from django import forms
from django.conf import settings

from webapp.documents.models import Document, Section


class BriefForm(forms.ModelForm):
    class Meta:
        model = Document
        fields = ("title", "topic", "audience", "tone", "target_words", "language", "notes",
                  "auto_approve_outline", "lead")
        widgets = {
            "lead": forms.Textarea(attrs={"rows": 3}),
            "topic": forms.Textarea(attrs={"rows": 3}),
            "notes": forms.Textarea(attrs={"rows": 3}),
        }
        help_texts = {"lead": "The finisher writes one when the article is done; once you edit it, it is yours."}
        labels = {"target_words": "Target length (words)",
                  "auto_approve_outline": "Start writing as soon as the outline is planned"}

    def clean_target_words(self) -> int:
        words = self.cleaned_data["target_words"]
        if not 100 <= words <= 50_000:
            raise forms.ValidationError("Choose a length between 100 and 50,000 words.")
        return words


class NewDocumentForm(BriefForm):
    """A new document's brief: no lead yet (the finisher writes it when the article is done)."""
    class Meta(BriefForm.Meta):
        fields = tuple(field for field in BriefForm.Meta.fields if field != "lead")


class SectionPlanForm(forms.ModelForm):
    class Meta:
        model = Section
        fields = ("heading", "goal", "key_points", "word_budget", "pinned")
        widgets = {
            "goal": forms.Textarea(attrs={"rows": 2}),
            "key_points": forms.Textarea(attrs={"rows": 3}),
        }


class SectionAddForm(SectionPlanForm):
    parent = forms.ModelChoiceField(queryset=Section.objects.none(), required=False,
                                    empty_label="(top level)", label="Under")

    class Meta(SectionPlanForm.Meta):
        fields = ("heading", "goal", "key_points", "word_budget")

    def __init__(self, *args, document: Document, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["parent"].queryset = document.sections.all()
        self.fields["parent"].label_from_instance = lambda s: s.heading


class SectionTextForm(forms.Form):
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 18}), required=False,
                           max_length=settings.SECTION_TEXT_MAX_CHARS, strip=False)
    version = forms.IntegerField(widget=forms.HiddenInput, min_value=1)


class SourceUploadForm(forms.Form):
    file = forms.FileField()
    title = forms.CharField(max_length=300, required=False, help_text="Defaults to the file name.")
