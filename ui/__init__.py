"""Streamlit UI of fashion-search (``streamlit run ui/app.py``); it talks to the search API."""
