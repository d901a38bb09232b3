# Run by `cmake --install` (install(CODE) in packaging/CMakeLists.txt, which
# sets the FB_* variables): installs the systemd units and the config with
# the paths of the prefix installed to (CMAKE_INSTALL_PREFIX now, which
# --prefix may have changed since configuring), not those of the configured
# one. /etc/fidbus and systemd's unit dir for prefix /usr, else both under
# the prefix; DESTDIR applies. The files are written straight to their
# destination, never staged in the build tree: a `sudo cmake --install`
# would leave root-owned files there that a later install as the user
# could not overwrite.
set(_p "${CMAKE_INSTALL_PREFIX}")
if(_p STREQUAL "/usr")
  set(_conf_dir "/etc/fidbus")
  set(_unit_dir "${FB_SYSTEMD_UNIT_DIR}")
else()
  set(_conf_dir "${_p}/${FB_SYSCONFDIR}/fidbus")
  set(_unit_dir "${_p}/lib/systemd/system")
endif()

# out: the text of the generated file name (BUILD/packaging/name) with the
# configured prefix's paths replaced by the installed-to prefix's.
function(_fb_text name out)
  file(READ "${FB_GEN_DIR}/${name}" t)
  string(REPLACE "${FB_CONF_BINDIR}/fidbusd " "${_p}/${FB_BINDIR}/fidbusd " t "${t}")
  string(REPLACE "${FB_CONF_CONFFILE}" "${_conf_dir}/fidbusd.conf" t "${t}")
  string(REPLACE "file://${FB_CONF_DOCDIR}/" "file://${_p}/${FB_DOCDIR}/" t "${t}")
  string(REPLACE "${FB_CONF_PLUGINDIR}/" "${_p}/${FB_LIBDIR}/fidbus/plugins/" t "${t}")
  set(${out} "${t}" PARENT_SCOPE)
endfunction()

function(_fb_write dest text)
  set(f "$ENV{DESTDIR}${dest}")
  message(STATUS "Installing: ${f}")
  file(WRITE "${f}" "${text}")
  file(CHMOD "${f}" PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  set(CMAKE_INSTALL_MANIFEST_FILES ${CMAKE_INSTALL_MANIFEST_FILES} "${dest}" PARENT_SCOPE)
endfunction()

foreach(u IN LISTS FB_UNITS)
  _fb_text(${u} text)
  _fb_write("${_unit_dir}/${u}" "${text}")
endforeach()

# An existing, edited config is kept (the new one goes next to it as
# fidbusd.conf.dist): an install must not undo an admin's work.
_fb_text(fidbusd.conf text)
set(_name fidbusd.conf)
if(EXISTS "$ENV{DESTDIR}${_conf_dir}/fidbusd.conf")
  file(READ "$ENV{DESTDIR}${_conf_dir}/fidbusd.conf" _old)
  if(NOT _old STREQUAL text)
    message(STATUS "Keeping the edited $ENV{DESTDIR}${_conf_dir}/fidbusd.conf; the new default is fidbusd.conf.dist")
    set(_name fidbusd.conf.dist)
  endif()
endif()
_fb_write("${_conf_dir}/${_name}" "${text}")
