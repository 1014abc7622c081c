"""The Streamlit page, split by what each part shows. Only dashboard.py and this package import Streamlit."""
