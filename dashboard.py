"""bnviz dashboard (placeholder until the dashboard issue): streamlit run dashboard.py"""
import streamlit as st

st.title("bnviz · Batch Normalization, live")
st.write("The live dashboard is being built. Meanwhile: `python -m bnviz train --epochs 1`.")
