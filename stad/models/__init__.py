"""stad.models"""
