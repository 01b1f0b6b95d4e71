"""Write-back: local changes reach the share in order, content once it is quiet.

queue.py (`WriteBack`) is the whole as the mount sees it; its docstring says how the parts
(opworker, uploader, dirty, newfiles, pacing, rwlock, shareops) fit. Import from the modules:
this package imports nothing, so the dirty set can be used without loading the uploader.
"""
