"""The Streamlit workbench (``streamlit run ui/app.py``, or ``alwb ui``): pages over :class:`alwb.project.Project`.

Importing this package imports nothing; :mod:`ui.app` is the Streamlit script. The library (``alwb``) never imports
``ui`` or Streamlit.
"""
