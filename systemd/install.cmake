# Runs at install time (systemd/CMakeLists.txt): CMAKE_INSTALL_PREFIX is the
# prefix of this install; file(INSTALL) honours DESTDIR.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(sysconf "/etc")
else()
  set(sysconf "${CMAKE_INSTALL_PREFIX}/etc")
endif()
set(bindir "${CMAKE_INSTALL_PREFIX}/${HOOKFS_BINDIR}")
# The service directories are relative to the prefix, or absolute (the
# Debian 12 package puts units in /lib/systemd/system: debian/rules).
foreach(d HOOKFS_SYSTEMD_UNITDIR HOOKFS_SYSUSERSDIR HOOKFS_TMPFILESDIR)
  if(NOT IS_ABSOLUTE "${${d}}")
    set(${d} "${CMAKE_INSTALL_PREFIX}/${${d}}")
  endif()
endforeach()
file(MAKE_DIRECTORY "${HOOKFS_SERVICE_STAGE}")
foreach(unit hookfs.service hookfs@.service)
  file(READ "${HOOKFS_SERVICE_SRC}/${unit}" text)
  string(REPLACE "/usr/bin/hookfs" "${bindir}/hookfs" text "${text}")
  string(REPLACE "/etc/hookfs/" "${sysconf}/hookfs/" text "${text}")
  file(WRITE "${HOOKFS_SERVICE_STAGE}/${unit}" "${text}")
endforeach()
file(INSTALL "${HOOKFS_SERVICE_STAGE}/hookfs.service" "${HOOKFS_SERVICE_STAGE}/hookfs@.service"
     DESTINATION "${HOOKFS_SYSTEMD_UNITDIR}" FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(INSTALL "${HOOKFS_SERVICE_SRC}/sysusers.d/hookfs.conf"
     DESTINATION "${HOOKFS_SYSUSERSDIR}" FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(INSTALL "${HOOKFS_SERVICE_SRC}/tmpfiles.d/hookfs.conf"
     DESTINATION "${HOOKFS_TMPFILESDIR}" FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
# A conffile (Debian installs it in place): never overwrite an edited one
# on a plain `cmake --install`; a DESTDIR (package) build always gets it.
if(NOT "$ENV{DESTDIR}" STREQUAL "" OR NOT EXISTS "${sysconf}/hookfs/hookfs.conf")
  file(INSTALL "${HOOKFS_SERVICE_SRC}/hookfs.conf" DESTINATION "${sysconf}/hookfs"
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
else()
  message(STATUS "Keeping: ${sysconf}/hookfs/hookfs.conf (the example is ${HOOKFS_SERVICE_SRC}/hookfs.conf)")
endif()
