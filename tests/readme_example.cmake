# fidbus_readme_example(NAME OUT): writes the ```c block that README.md has
# between <!-- example-NAME:begin --> and <!-- example-NAME:end --> to OUT,
# at configure time, so a test builds and runs exactly what the README
# shows. README.md becomes a configure dependency (editing it re-extracts);
# OUT is rewritten only when the code changed (no needless rebuilds). A
# missing or malformed block stops the configure with its reason.
function(fidbus_readme_example name out)
  set(readme ${PROJECT_SOURCE_DIR}/README.md)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${readme})
  file(READ ${readme} text)
  string(FIND "${text}" "<!-- example-${name}:begin -->" begin)
  string(FIND "${text}" "<!-- example-${name}:end -->" end)
  if(begin EQUAL -1 OR end LESS_EQUAL begin)
    message(FATAL_ERROR "README.md: no <!-- example-${name}:begin --> ... end block")
  endif()
  math(EXPR len "${end} - ${begin}")
  string(SUBSTRING "${text}" ${begin} ${len} block)
  string(FIND "${block}" "```c\n" code_begin)
  if(code_begin EQUAL -1)
    message(FATAL_ERROR "README.md: the example-${name} block has no ```c fence")
  endif()
  math(EXPR code_begin "${code_begin} + 5")
  string(SUBSTRING "${block}" ${code_begin} -1 code)
  string(FIND "${code}" "\n```" code_end)
  if(code_end EQUAL -1)
    message(FATAL_ERROR "README.md: the example-${name} code block is not closed")
  endif()
  math(EXPR code_end "${code_end} + 1")
  string(SUBSTRING "${code}" 0 ${code_end} code)
  file(WRITE ${out}.tmp "${code}")
  configure_file(${out}.tmp ${out} COPYONLY)
endfunction()
