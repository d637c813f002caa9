"""The list and read queries behind both the JSON API (api/routes/) and the browser console (api/console/).

One function per listing (deliveries, dead letters, events, incidents and things), each filtering, ordering
newest first and paging by keyset (a cursor on (timestamp, id), so a deep page costs what the first one does),
returning the API's response models. A rule written here shows in both the API and the console.
"""
