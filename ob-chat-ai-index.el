;;; ob-chat-ai-index.el --- The chat-ai blocks of a buffer, kept up to date as it changes  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; A block with a :session sends what the earlier blocks of its
;; session sent and what they were answered.  Org finds those blocks,
;; their header args and their results by parsing the buffer, and every
;; reply changes the buffer.  So each buffer keeps an index: an entry
;; per chat-ai block, with where it is, its header args as Babel reads
;; them without evaluating anything, its body, and the text of its
;; result.  The index notes the lines each change of the buffer touches
;; and, when it is next asked, reads again only what they touched:
;;
;; - a block that a change touched, or that a change left a keyword
;;   line right above (which may be its #+name or #+header), is read
;;   again, and so is a block whose #+begin_src line a change made a
;;   chat-ai one;
;; - a block whose result, or the blank lines before it, changed keeps
;;   its entry, and its result is read again when its session is next
;;   asked for;
;; - the whole buffer is read again after a change that may move what
;;   Org reads elsewhere: one that adds, removes or reorders a heading,
;;   a line that opens or closes a block, a drawer or a LaTeX
;;   environment, or that touches header-args or #+PROPERTY, or a
;;   heading's property drawer that holds header-args; after a change
;;   made with modification hooks inhibited, which the buffer's tick
;;   shows; and when Babel's default header args, the buffer's
;;   #+PROPERTY values or the settings Babel reads a body with change.
;;
;; A named block finds its result by name anywhere in the buffer, so
;; its result is not kept but read each time.

;;; Code:

;;;; Requirements

(require 'cl-lib)
(require 'seq)
(require 'subr-x)
(require 'org)
(require 'org-src)
(require 'org-element)
(require 'ob)
(require 'ob-chat-ai-reply)

(defvar org-babel-default-header-args:chat-ai)

;;;; Entries

(cl-defstruct (ob-chat-ai-index-entry (:constructor ob-chat-ai-index--make-entry)
                                      (:copier nil))
  "A chat-ai block of a buffer, as the index last read it."
  (start nil :documentation "A marker at the start of its #+begin_src line, kept
there when text is put right before the line.")
  (begin 0 :documentation "How far before START the block starts, its affiliated
keywords included.")
  (block-end 0 :documentation "How far after START its #+end_src line ends.")
  (end nil :documentation "How far after START its result, or else the blank
lines after the block, end; nil while the result is unread.")
  (params nil :documentation "Its header args as Babel reads them without evaluating any.")
  (body nil :documentation "Its body as Babel reads it, before any noweb expansion.")
  (name nil :documentation "Its #+name, or nil.")
  (result :unread :documentation "The text of its result as (TEXT), TEXT nil when it
has none; :unread until it is read; :named when it is found by the
block's name, and so read each time.")
  (memo nil :documentation "What ob-chat-ai-messages made of the block's own text.")
  (result-memo nil :documentation "What ob-chat-ai-messages made of its result, as (TEXT . WHAT)."))

(defun ob-chat-ai-index-start (entry)
  "Return the start of the #+begin_src line of ENTRY's block."
  (marker-position (ob-chat-ai-index-entry-start entry)))

(cl-defstruct (ob-chat-ai-index--state (:constructor ob-chat-ai-index--make-state)
                                       (:copier nil))
  "The index of a buffer, and the changes made to the buffer since it was read."
  (buffer nil :documentation "The buffer indexed.")
  (entries nil :documentation "The entries of its chat-ai blocks, in document order.")
  (settings nil :documentation "What besides the text Babel read the blocks with.")
  (tick nil :documentation "The buffer's characters modified tick that the entries and
the changes noted account for.")
  (changes nil :documentation "The changed lines not read again, as (START . END) markers,
the newest first.")
  (before nil :documentation "The change under way, as (BEG END DELIMITERS) before it.")
  (guarded nil :documentation "The property drawers holding header-args, as (START . END)
markers from their heading's start to their end.")
  (stale nil :documentation "Non-nil when the whole buffer is to be read again;
:unannounced when it changed without modification hooks."))

(defvar-local ob-chat-ai-index--state nil
  "The index of this buffer's chat-ai blocks, or nil before it is first needed.")

(defconst ob-chat-ai-index--most-changes 64
  "How many separate changes are noted before the whole buffer is read again.")

(defconst ob-chat-ai-index--largest-change 100000
  "How many characters of changed lines are searched for delimiters, at most.
A larger change reads the whole buffer again.")

;;;; Reading the whole buffer

(defun ob-chat-ai-index--settings ()
  "Return the settings besides the text that decide how Babel sees blocks."
  (list org-babel-default-header-args
        (and (boundp 'org-babel-default-header-args:chat-ai)
             org-babel-default-header-args:chat-ai)
        org-keyword-properties
        org-global-properties
        org-src-preserve-indentation
        tab-width
        default-directory))

(defun ob-chat-ai-index--volatile-p (settings)
  "Return non-nil when a default header arg of SETTINGS is computed each time.
Babel calls a function that is a default's value, and evaluates a
form, every time it reads a block's header args."
  (seq-some (lambda (pair)
              (and (consp pair)
                   (not (or (null (cdr pair)) (stringp (cdr pair)) (numberp (cdr pair))))))
            (append (nth 0 settings) (nth 1 settings))))

(defun ob-chat-ai-index--chat-ai-p (element &optional start)
  "Return non-nil when ELEMENT is a chat-ai block.
With START, its #+begin_src line must start there."
  (and (eq (org-element-type element) 'src-block)
       (equal (org-element-property :language element) "chat-ai")
       (or (not start) (= (org-element-property :post-affiliated element) start))))

(defun ob-chat-ai-index-block-info (element &optional no-eval)
  "Return Babel's information about the parsed block ELEMENT, as at point.
NO-EVAL is as for `org-babel-get-src-block-info'."
  (unless (org-element-property :label-fmt element)
    ;; Without one, Org parses the buffer again at point to find the
    ;; block's coderef format, which is then the default one.
    (org-element-put-property element :label-fmt org-coderef-label-format))
  (save-excursion
    (goto-char (org-element-property :post-affiliated element))
    (org-babel-get-src-block-info no-eval element)))

(defun ob-chat-ai-index--entry (element)
  "Return a new entry for the chat-ai block ELEMENT, its result unread."
  (let* ((start (org-element-property :post-affiliated element))
         (info (ob-chat-ai-index-block-info element t))
         (block-end (save-excursion
                      (goto-char (org-element-property :end element))
                      (skip-chars-backward " \t\r\n")
                      (line-end-position))))
    (ob-chat-ai-index--make-entry
     :start (copy-marker start t)
     :begin (- start (org-element-property :begin element))
     :block-end (- block-end start)
     :params (nth 2 info)
     :body (nth 1 info)
     :name (nth 4 info))))

(defun ob-chat-ai-index--read-buffer ()
  "Return the entries of the chat-ai blocks of the whole buffer, from one parse.
The results that Org parses as fixed-width lines or a drawer are
read; the others are left to be read when they are needed."
  (let ((entries nil)
        (previous nil))
    (org-element-map (org-element-parse-buffer 'element) org-element-all-elements
      (lambda (element)
        (when previous
          (ob-chat-ai-index--take-result
           (car previous) (cdr previous)
           (and (= (org-element-property :begin element)
                   (org-element-property :end (cdr previous)))
                element)
           nil)
          (setq previous nil))
        (when (ob-chat-ai-index--chat-ai-p element)
          (setq previous (cons (ob-chat-ai-index--entry element) element))
          (push (car previous) entries))
        nil))
    (when previous
      (ob-chat-ai-index--take-result (car previous) (cdr previous) nil nil))
    (nreverse entries)))

(defun ob-chat-ai-index--guarded-drawers ()
  "Return the places where a change may change the header args blocks inherit.
They are (START . END) markers, from the start of the heading above
each header-args property line to the end of its drawer: the drawer
holds for the heading's subtree only while it follows the heading and
holds nothing but properties."
  (let ((case-fold-search t)
        (guarded nil))
    (save-excursion
      (goto-char (point-min))
      (while (re-search-forward "^[ \t]*:header-args" nil t)
        (let* ((heading (save-excursion
                          (if (re-search-backward "^\\*+[ \t]" nil t) (point) (point-min))))
               (next (save-excursion
                       (if (re-search-forward "^\\*+[ \t]" nil t)
                           (match-beginning 0)
                         (point-max))))
               (end (if (re-search-forward "^[ \t]*:end:[ \t]*$" next t) (point) next)))
          (push (cons (copy-marker heading) (copy-marker end)) guarded)
          (goto-char end))))
    guarded))

(defun ob-chat-ai-index--release (state)
  "Let go of the markers of STATE, an index replaced, for edits and drawers.
Those of its entries are left to the garbage collector: a caller may
still hold an entry, when a block it evaluates uses the index too."
  (dolist (span (append (ob-chat-ai-index--state-changes state)
                        (ob-chat-ai-index--state-guarded state)))
    (set-marker (car span) nil)
    (set-marker (cdr span) nil)))

(defun ob-chat-ai-index--rebuild (settings)
  "Index the whole buffer again, as read with SETTINGS."
  (let ((old ob-chat-ai-index--state))
    (when (and old (eq (ob-chat-ai-index--state-buffer old) (current-buffer)))
      (ob-chat-ai-index--release old)))
  (add-hook 'before-change-functions #'ob-chat-ai-index--before-change nil t)
  (add-hook 'after-change-functions #'ob-chat-ai-index--after-change nil t)
  (setq ob-chat-ai-index--state
        (ob-chat-ai-index--make-state
         :buffer (current-buffer)
         :entries (ob-chat-ai-index--read-buffer)
         :settings settings
         :guarded (ob-chat-ai-index--guarded-drawers)
         :tick (buffer-chars-modified-tick))))

;;;; Results

(defun ob-chat-ai-index--take-result (entry block next read)
  "Note in ENTRY the result of its parsed BLOCK.
NEXT is the element that starts where BLOCK ends, or nil.  A result
that Org parses as fixed-width lines or a drawer is read from NEXT;
one that Babel must find is read when READ is non-nil, else left
unread."
  (let ((end (org-element-property :end block))
        (babel (lambda ()
                 (if read
                     (list (save-excursion
                             (goto-char (org-element-property :post-affiliated block))
                             (ob-chat-ai-index--babel-result)))
                   :unread))))
    (setf (ob-chat-ai-index-entry-end entry)
          (- (if next (org-element-property :end next) end)
             (ob-chat-ai-index-entry-start entry))
          (ob-chat-ai-index-entry-result entry)
          (cond
           ((ob-chat-ai-index-entry-name entry) :named)
           ((and next (org-element-property :results next))
            (pcase (org-element-type next)
              ('fixed-width (list (org-element-property :value next)))
              ('drawer (list (ob-chat-ai-index--drawer-text next)))
              (_ (funcall babel))))
           ((and next (eq (org-element-type next) 'keyword)
                 (equal (org-element-property :key next) "RESULTS"))
            (funcall babel))
           ((or next (= end (point-max))) (list nil))
           (t (funcall babel))))))

(defun ob-chat-ai-index--drawer-text (element)
  "Return the text in the drawer ELEMENT: its tool records, then the answer.
The model's thinking is left out."
  (let ((begin (org-element-property :contents-begin element)))
    (if begin
        (let ((text (buffer-substring-no-properties
                     begin (org-element-property :contents-end element))))
          (concat (ob-chat-ai--tool-blocks text)
                  (org-unescape-code-in-string
                   (ob-chat-ai--without-reasoning
                    (ob-chat-ai--without-tools text)))))
      "")))

(defun ob-chat-ai-index--babel-result ()
  "Return the text of the result of the block at point, or nil when it has none.
The result is where Babel finds it."
  (let ((where (org-babel-where-is-src-block-result)))
    (when where
      (save-excursion
        (goto-char where)
        (forward-line)
        (let ((element (org-element-at-point)))
          (pcase (org-element-type element)
            ;; Babel reads "42" as a number: take the text as written.
            ('fixed-width (org-element-property :value element))
            ('drawer (ob-chat-ai-index--drawer-text element))
            (_ (let ((value (org-babel-read-result)))
                 (and (stringp value) value)))))))))

(defvar ob-chat-ai-index--again nil
  "Non-nil while the index is used again after it proved out of date.")

(defun ob-chat-ai-index-element (entry)
  "Return ENTRY's block, as parsed by Org now.
When Org no longer sees a chat-ai block there, the index is out of
date: throw to `ob-chat-ai-index-call', which reads the buffer again."
  (save-excursion
    (let ((start (ob-chat-ai-index-start entry)))
      (goto-char start)
      (let ((element (org-element-at-point)))
        (cond
         ((ob-chat-ai-index--chat-ai-p element start)
          ;; Org may keep ELEMENT in its cache: the caller may add to a copy.
          (org-element-copy element))
         (ob-chat-ai-index--again
          (error "The chat-ai block at line %d is not where Org parses one"
                 (line-number-at-pos start)))
         (t (throw 'ob-chat-ai-index--stale nil)))))))

(defun ob-chat-ai-index-result (entry)
  "Return the text of the result of ENTRY's block, or nil when it has none."
  (when (eq (ob-chat-ai-index-entry-result entry) :unread)
    (let* ((block (ob-chat-ai-index-element entry))
           (end (org-element-property :end block))
           (next (and (< end (point-max))
                      (save-excursion
                        (goto-char end)
                        (let ((element (org-element-at-point)))
                          (and element (= (org-element-property :begin element) end)
                               element))))))
      (ob-chat-ai-index--take-result entry block next t)
      (setf (ob-chat-ai-index-entry-result-memo entry) nil)))
  (pcase (ob-chat-ai-index-entry-result entry)
    (:named (save-excursion
              (goto-char (ob-chat-ai-index-start entry))
              (ob-chat-ai-index--babel-result)))
    (`(,text) text)))

;;;; Following changes

(defconst ob-chat-ai-index--block-regexp
  "^[ \t]*#\\+begin_src[ \t]+chat-ai\\(?:[ \t]\\|$\\)"
  "The regexp of the first line of a chat-ai block.")

(defconst ob-chat-ai-index--upheaval-regexp
  "^\\*+[ \t]\\|header-args\\|^[ \t]*#\\+property:"
  "The regexp of text whose change may change what Org reads far from it.")

(defconst ob-chat-ai-index--delimiter-regexp
  (concat "^[ \t]*\\(?:\\(#\\+begin\\(?:_[^ \t\r\n]+\\|:\\)\\)"
          "\\|#\\+end\\(?:_[^ \t\r\n]+\\|:\\)[ \t]*$"
          "\\|\\\\\\(?:begin\\|end\\){.*"
          "\\|:[[:alnum:]_-]+:[ \t]*$\\)")
  "The regexp of a line that opens or closes a block, drawer or environment.
The first group is a block's opening line up to its type, which is
all of that line that decides where blocks are.")

(defun ob-chat-ai-index--delimiters (beg end)
  "Return the delimiter lines of the lines from BEG to END, in order.
They are as `ob-chat-ai-index--delimiter-regexp' reads them, in lower
case.  Return :upheaval when those lines hold text whose change may
change what Org reads far from it, or are too long to search."
  (save-excursion
    (let ((case-fold-search t)
          (from (progn (goto-char beg) (line-beginning-position)))
          (to (progn (goto-char end) (line-end-position)))
          (delimiters nil))
      (goto-char from)
      (if (or (> (- to from) ob-chat-ai-index--largest-change)
              (re-search-forward ob-chat-ai-index--upheaval-regexp to t))
          :upheaval
        (while (re-search-forward ob-chat-ai-index--delimiter-regexp to t)
          (push (downcase (or (match-string-no-properties 1)
                              (string-trim (match-string-no-properties 0))))
                delimiters))
        (nreverse delimiters)))))

(defun ob-chat-ai-index--own-state ()
  "Return the index of this buffer, or nil when it has none of its own.
An indirect buffer or a clone may hold the index of the buffer it
was made from, and leaves it alone: that buffer's index sees from
its tick that the text they share changed."
  (let ((state ob-chat-ai-index--state))
    (and state (eq (ob-chat-ai-index--state-buffer state) (current-buffer)) state)))

(defun ob-chat-ai-index--before-change (beg end)
  "Note the delimiter lines from BEG to END, which are about to change."
  (let ((state (ob-chat-ai-index--own-state)))
    (cond
     ((not state))
     ((not (eql (buffer-chars-modified-tick) (ob-chat-ai-index--state-tick state)))
      (setf (ob-chat-ai-index--state-stale state) :unannounced))
     ((not (ob-chat-ai-index--state-stale state))
      (condition-case nil
          (save-match-data
            (save-restriction
              (widen)
              (setf (ob-chat-ai-index--state-before state)
                    (list beg end (ob-chat-ai-index--delimiters beg end)))))
        (error (setf (ob-chat-ai-index--state-stale state) t)))))))

(defun ob-chat-ai-index--after-change (beg end old-length)
  "Note that the text from BEG to END replaced OLD-LENGTH characters.
The change is kept for the index to read again what it touched, or
makes the whole buffer be read again when its delimiter lines differ."
  (let ((state (ob-chat-ai-index--own-state)))
    (when state
      (unless (ob-chat-ai-index--state-stale state)
        (condition-case nil
            (save-match-data
              (save-restriction
                (widen)
                (let ((before (ob-chat-ai-index--state-before state)))
                  (setf (ob-chat-ai-index--state-before state) nil)
                  (if (not (and before (<= (nth 0 before) beg)
                                (<= (+ beg old-length) (nth 1 before))))
                      (setf (ob-chat-ai-index--state-stale state) t)
                    (let* ((from (nth 0 before))
                           (to (+ (nth 1 before) (- end beg old-length)))
                           (old (nth 2 before))
                           (new (ob-chat-ai-index--delimiters from to)))
                      (if (or (eq old :upheaval) (not (equal old new)))
                          (setf (ob-chat-ai-index--state-stale state) t)
                        (ob-chat-ai-index--note-change state from to)))))))
          (error (setf (ob-chat-ai-index--state-stale state) t))))
      (setf (ob-chat-ai-index--state-tick state) (buffer-chars-modified-tick)))))

(defun ob-chat-ai-index--note-change (state from to)
  "Note in STATE that the lines from FROM to TO changed.
When the last of them is a keyword line, the line after it counts as
changed too: the keyword may now belong to the block that starts
there, as its #+name or #+header."
  (let ((start (save-excursion (goto-char from) (line-beginning-position)))
        (end (save-excursion
               (goto-char to)
               (forward-line 0)
               (if (looking-at-p "[ \t]*#\\+")
                   (forward-line 1)
                 (end-of-line))
               (point)))
        (last (car (ob-chat-ai-index--state-changes state))))
    (cond
     ((and last (<= (car last) end) (>= (cdr last) start))
      (set-marker (car last) (min start (car last)))
      (set-marker (cdr last) (max end (cdr last))))
     ((>= (length (ob-chat-ai-index--state-changes state))
          ob-chat-ai-index--most-changes)
      (setf (ob-chat-ai-index--state-stale state) t))
     (t (push (cons (copy-marker start) (copy-marker end))
              (ob-chat-ai-index--state-changes state))))))

;;;; Reading again what changed

(defun ob-chat-ai-index--touches-p (spans low high)
  "Return non-nil when one of SPANS, (START . END) pairs, meets LOW to HIGH."
  (seq-some (lambda (span) (and (<= (car span) high) (>= (cdr span) low))) spans))

(defun ob-chat-ai-index--update (state)
  "Read again what was touched by the edits noted in STATE.
Return nil when they may have changed what blocks inherit: the
whole buffer is to be read again."
  (let ((changes (mapcar (lambda (span)
                           (prog1 (cons (marker-position (car span))
                                        (marker-position (cdr span)))
                             (set-marker (car span) nil)
                             (set-marker (cdr span) nil)))
                         (ob-chat-ai-index--state-changes state))))
    (setf (ob-chat-ai-index--state-changes state) nil)
    (unless (seq-some (lambda (guard)
                        (ob-chat-ai-index--touches-p changes (car guard) (cdr guard)))
                      (ob-chat-ai-index--state-guarded state))
      (let ((lines (mapcar #'car changes))
            (kept nil))
        (dolist (entry (ob-chat-ai-index--state-entries state))
          (let* ((start (ob-chat-ai-index-start entry))
                 (block-end (+ start (ob-chat-ai-index-entry-block-end entry)))
                 (end (+ start (or (ob-chat-ai-index-entry-end entry)
                                   (ob-chat-ai-index-entry-block-end entry)))))
            (cond
             ((ob-chat-ai-index--touches-p
               changes (- start (ob-chat-ai-index-entry-begin entry)) block-end)
              (push start lines))
             (t
              (when (and (not (eq (ob-chat-ai-index-entry-result entry) :named))
                         (ob-chat-ai-index--touches-p changes block-end end))
                (setf (ob-chat-ai-index-entry-result entry) :unread
                      (ob-chat-ai-index-entry-end entry) nil))
              (push entry kept)))))
        (setq kept (nreverse kept))
        (setf (ob-chat-ai-index--state-entries state)
              (ob-chat-ai-index--merge
               kept (ob-chat-ai-index--read-lines changes lines kept)))
        t))))

(defun ob-chat-ai-index--read-lines (spans lines kept)
  "Return new entries for the chat-ai blocks whose #+begin_src line is in SPANS.
SPANS are (START . END) pairs; the lines that start in them, and
those at LINES, are looked at.  The blocks of KEPT, the entries still
valid, are left out."
  (let ((case-fold-search t)
        (starts (mapcar #'ob-chat-ai-index-start kept))
        (candidates lines)
        (found nil))
    (save-excursion
      (dolist (span spans)
        (goto-char (car span))
        (forward-line 0)
        (while (re-search-forward ob-chat-ai-index--block-regexp
                                  (save-excursion (goto-char (cdr span)) (line-end-position))
                                  t)
          (push (match-beginning 0) candidates)))
      (dolist (start (sort (delete-dups candidates) #'<))
        (goto-char start)
        (when (and (bolp)
                   (not (memql start starts))
                   (looking-at-p ob-chat-ai-index--block-regexp))
          (let ((element (org-element-at-point)))
            (when (ob-chat-ai-index--chat-ai-p element start)
              ;; Org may keep ELEMENT in its cache: the index adds to a copy.
              (push (ob-chat-ai-index--entry (org-element-copy element)) found))))))
    (nreverse found)))

(defun ob-chat-ai-index--merge (entries more)
  "Return ENTRIES and MORE, both in document order, as one list in that order."
  (let ((merged nil))
    (while (and entries more)
      (if (< (ob-chat-ai-index-start (car more)) (ob-chat-ai-index-start (car entries)))
          (push (pop more) merged)
        (push (pop entries) merged)))
    (nconc (nreverse merged) entries more)))

;;;; Using the index

(defun ob-chat-ai-index-entries ()
  "Return the entries of this buffer's chat-ai blocks, in document order.
The index is brought up to date with the buffer first."
  (org-with-wide-buffer
   (let ((state ob-chat-ai-index--state)
         (settings (ob-chat-ai-index--settings)))
     (when (and state
                (eq (ob-chat-ai-index--state-buffer state) (current-buffer))
                (or (eq (ob-chat-ai-index--state-stale state) :unannounced)
                    (not (eql (ob-chat-ai-index--state-tick state)
                              (buffer-chars-modified-tick)))))
       ;; Org's parse cache missed the change too.
       (org-element-cache-reset))
     (unless (and state
                  (eq (ob-chat-ai-index--state-buffer state) (current-buffer))
                  (not (ob-chat-ai-index--state-stale state))
                  (eql (ob-chat-ai-index--state-tick state) (buffer-chars-modified-tick))
                  (equal (ob-chat-ai-index--state-settings state) settings)
                  (not (ob-chat-ai-index--volatile-p settings))
                  (or (null (ob-chat-ai-index--state-changes state))
                      (ob-chat-ai-index--update state)))
       (ob-chat-ai-index--rebuild settings))
     (ob-chat-ai-index--state-entries ob-chat-ai-index--state))))

(defun ob-chat-ai-index-call (function)
  "Return the value of FUNCTION called with the entries of this buffer.
It is called in the whole buffer, widened.  When it finds the index
out of date (`ob-chat-ai-index-element' throws), the whole buffer is
read again and FUNCTION called once more."
  (org-with-wide-buffer
   (let ((value (catch 'ob-chat-ai-index--stale
                  (list (funcall function (ob-chat-ai-index-entries))))))
     (if value
         (car value)
       (setf (ob-chat-ai-index--state-stale ob-chat-ai-index--state) t)
       (let ((ob-chat-ai-index--again t))
         (funcall function (ob-chat-ai-index-entries)))))))

(provide 'ob-chat-ai-index)

;;; ob-chat-ai-index.el ends here
