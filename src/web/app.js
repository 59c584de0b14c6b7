// shoal web page
